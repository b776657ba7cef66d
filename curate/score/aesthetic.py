"""LAION aesthetic predictors: a head on L2-normalised CLIP image embeddings -> a score.

Two published weight formats, both ``torch.save(model.state_dict())`` files:

- ``improved_mlp``: LAION's improved-aesthetic-predictor (e.g. ``sac+logos+ava1-l14-linearMSE.pth``):
  ``layers`` = Linear(D, 1024), Dropout(0.2), Linear(1024, 128), Dropout(0.2), Linear(128, 64),
  Dropout(0.1), Linear(64, 16), Linear(16, 1), no activations; keys ``layers.{0,2,4,6,7}.{weight,bias}``.
- ``linear``: LAION's first aesthetic-predictor (``sa_0_4_vit_l_14_linear.pth``, ``..._b_32_linear.pth``):
  one Linear(D, 1); keys ``weight``, ``bias``.

The published heads take D = 768 (CLIP ViT-L/14, openai) or 512 (the ViT-B/32 linear one);
a head must run on the embedder it was trained on, which the run can only check by
width. Scores are on the predictor's own scale (roughly 1-10; Stable Diffusion v1 kept > 5.0).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from curate.score import embed, weights

SCORE = "aesthetic"
WHAT = {"improved_mlp": "LAION improved-aesthetic-predictor MLP", "linear": "LAION linear aesthetic head"}
# The first layer's weight, shape (out, D): where the embedding width is read from.
FIRST = {"improved_mlp": "layers.0.weight", "linear": "weight"}


class AestheticConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["improved_mlp", "linear"] = Field("improved_mlp", description=(
        "LAION's improved aesthetic predictor (MLP) or its older linear head."))
    weights: str = Field(description="A local .pth state dict in `format`.")
    min_score: float | None = Field(None, description=(
        "Keep only records scoring above this; none records the score without filtering."))

    def describe(self) -> str:
        return f"laion-aesthetic-{self.format}:{self.weights}"


def build(format: str, dim: int):
    """The architecture of ``format`` on ``dim``-d embeddings, random-initialised, in eval mode."""
    from torch import nn

    if format == "linear":
        return nn.Linear(dim, 1).eval()
    layers = nn.Sequential(
        nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
        nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))
    # Nested under the name ``layers``: the ``layers.N.*`` keys of LAION's MLP class.
    return nn.Sequential(OrderedDict(layers=layers)).eval()


def load(config: AestheticConfig, dim: int):
    """The head in ``config.weights``, checked to take ``dim``-d embeddings."""
    state = weights.read_state_dict(config.weights, WHAT[config.format])
    width = weights.shape(state, FIRST[config.format], config.weights, WHAT[config.format])[-1]
    if width != dim:
        raise weights.WeightsError(
            f"{config.weights}: the {WHAT[config.format]} takes {width}-d embeddings "
            f"({FIRST[config.format]} has shape {tuple(state[FIRST[config.format]].shape)}), but the embedder "
            f"gives {dim}-d ones: expected {FIRST[config.format]} of shape (..., {dim})")
    model = weights.load_strict(build(config.format, dim), state, config.weights, WHAT[config.format])
    return model.requires_grad_(False)


def save_random(path, format: str, dim: int, seed: int = 0) -> None:
    """A random-initialised head in the real format (tests, the offline demo): its scores mean nothing."""
    import torch

    torch.manual_seed(seed)
    torch.save(build(format, dim).state_dict(), path)


class Aesthetic:
    """Stage: ``embedding`` -> ``aesthetic`` (float32) for the rows with an embedding."""

    def __init__(self, config: AestheticConfig, dim: int):
        self.model = load(config, dim)
        self.dim = dim

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(vectors)).squeeze(-1).numpy()

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows, vectors = embed.matrix(batch)
        if rows and vectors.shape[1] != self.dim:
            raise ValueError(f"aesthetic head expects {self.dim}-d embeddings, batch has {vectors.shape[1]}-d")
        return embed.with_rows(batch, SCORE, rows, self.scores(vectors), pa.float32())
