"""NSFW scores on L2-normalised CLIP image embeddings -> pnsfw, a probability in [0, 1]. Optional.

Two kinds:

``head`` -- a trained classifier, in this file format: a ``torch.save(model.state_dict())``
of an MLP held under the name ``layers``: ``layers.0`` = Linear(D, h1), ReLU, ``layers.2`` =
Linear(h1, h2), ReLU, ..., last Linear(h_k, 1). Keys ``layers.{0,2,4,...}.{weight,bias}``;
the depth and widths are read from the shapes in the file, D must be the embedder's width.
Input: the L2-normalised image embedding; output: one logit, pnsfw = sigmoid(logit). A
single layer (``layers.0`` = Linear(D, 1)) is a linear probe. LAION's CLIP-based NSFW
detector ships as a Keras model; convert its dense layers into this format to use it.

``zero_shot`` -- no head: CLIP's own text tower embeds prompts describing unsafe and safe
content; pnsfw = the softmax probability (at the model's logit scale) that falls on the
unsafe prompts. It needs the same open_clip model as the embedder, whose text tower it loads
once at construction.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Annotated, Literal, Union

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from curate.score import clip, embed, weights

SCORE = "pnsfw"
WHAT = "NSFW head (layers.{0,2,..} Linear with ReLU between, one logit)"
_LAYER = re.compile(r"^layers\.(\d+)\.weight$")


class NsfwHeadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["head"] = Field(description="A trained classifier on the CLIP image embedding.")
    weights: str = Field(description="A local state dict in the format above (`curate/score/nsfw.py`).")
    max_pnsfw: float | None = Field(None, ge=0, le=1, description=(
        "Reject at or above this p(nsfw); none records the score only."))

    def describe(self, spec: clip.ClipSpec) -> str:
        return f"nsfw-head:{self.weights} on {spec.describe()}"


class NsfwZeroShotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["zero_shot"] = Field(description=(
        "No head: p(nsfw) is the softmax mass CLIP puts on the unsafe prompts, against the safe ones."))
    unsafe_prompts: list[str] = Field(default_factory=lambda: [
        "a sexually explicit photo", "a pornographic image", "a photo of graphic violence and gore"],
        min_length=1, description="Prompts describing unsafe content.")
    safe_prompts: list[str] = Field(default_factory=lambda: [
        "a photo", "a painting", "a drawing", "a print", "a photo of an object", "a landscape"], min_length=1,
        description="Prompts describing safe content.")
    max_pnsfw: float | None = Field(None, ge=0, le=1, description=(
        "Reject at or above this p(nsfw); none records the score only."))

    def describe(self, spec: clip.ClipSpec) -> str:
        return (f"nsfw-zero-shot:{spec.describe()} ({len(self.unsafe_prompts)} unsafe / "
                f"{len(self.safe_prompts)} safe prompts)")


NsfwConfig = Annotated[Union[NsfwHeadConfig, NsfwZeroShotConfig], Field(discriminator="kind")]


def build(widths: list[int]):
    """An MLP through ``widths`` (D, h1, ..., 1) with ReLU between, random-initialised, in eval mode."""
    from torch import nn

    layers: list = []
    for i, (width_in, width_out) in enumerate(zip(widths, widths[1:])):
        layers += [nn.ReLU()] if i else []
        layers.append(nn.Linear(width_in, width_out))
    return nn.Sequential(OrderedDict(layers=nn.Sequential(*layers))).eval()


def load_head(path: str, dim: int):
    state = weights.read_state_dict(path, WHAT)
    indices = sorted(int(m.group(1)) for k in state if (m := _LAYER.match(k)))
    if not indices or indices != list(range(0, 2 * len(indices), 2)):
        raise weights.WeightsError(f"{path}: not an {WHAT}: expected keys layers.0.weight, layers.2.weight, ...; "
                                   f"found {sorted(state)[:6]}")
    shapes = [weights.shape(state, f"layers.{i}.weight", path, WHAT) for i in indices]
    if shapes[0][1] != dim:
        raise weights.WeightsError(f"{path}: the NSFW head takes {shapes[0][1]}-d embeddings (layers.0.weight "
                                   f"has shape {shapes[0]}), but the embedder gives {dim}-d ones: expected "
                                   f"layers.0.weight of shape (..., {dim})")
    if shapes[-1][0] != 1:
        raise weights.WeightsError(f"{path}: the NSFW head must end in one logit; layers.{indices[-1]}.weight "
                                   f"has shape {shapes[-1]}, expected (1, {shapes[-1][1]})")
    widths = [dim] + [s[0] for s in shapes]
    return weights.load_strict(build(widths), state, path, WHAT).requires_grad_(False)


def save_random(path, dim: int, hidden: tuple[int, ...] = (64,), seed: int = 0) -> None:
    """A random-initialised head in the format above (tests, the offline demo): its scores mean nothing."""
    import torch

    torch.manual_seed(seed)
    torch.save(build([dim, *hidden, 1]).state_dict(), path)


class _Pnsfw:
    """A stage ``embedding`` -> ``pnsfw``; subclasses give ``dim`` and ``pnsfw(vectors)``."""

    dim: int

    def pnsfw(self, vectors: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows, vectors = embed.matrix(batch)
        if rows and vectors.shape[1] != self.dim:
            raise ValueError(f"{type(self).__name__} expects {self.dim}-d embeddings, batch has {vectors.shape[1]}-d")
        return embed.with_rows(batch, SCORE, rows, self.pnsfw(vectors), pa.float32())


class NsfwHead(_Pnsfw):
    """Stage: ``embedding`` -> ``pnsfw`` = sigmoid(head(embedding))."""

    def __init__(self, config: NsfwHeadConfig, dim: int):
        self.model = load_head(config.weights, dim)
        self.dim = dim

    def pnsfw(self, vectors: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.sigmoid(self.model(torch.from_numpy(vectors))).squeeze(-1).numpy()


class NsfwZeroShot(_Pnsfw):
    """Stage: ``embedding`` -> ``pnsfw`` = softmax mass on the unsafe prompts."""

    def __init__(self, config: NsfwZeroShotConfig, spec: clip.ClipSpec):
        import torch

        loaded = clip.load(spec)  # the embedder's text tower, the same one even when random-initialised
        prompts = [*config.unsafe_prompts, *config.safe_prompts]
        with torch.no_grad():
            text = loaded.model.encode_text(loaded.tokenizer(prompts).to(loaded.device))
            self.prompts = torch.nn.functional.normalize(text.float(), dim=-1).cpu()
            self.scale = float(loaded.model.logit_scale.exp())
        self.unsafe = len(config.unsafe_prompts)
        self.dim = loaded.embed_dim

    def pnsfw(self, vectors: np.ndarray) -> np.ndarray:
        import torch

        logits = self.scale * torch.from_numpy(vectors) @ self.prompts.T
        return torch.softmax(logits, dim=1)[:, :self.unsafe].sum(dim=1).numpy()


def build_stage(config: NsfwHeadConfig | NsfwZeroShotConfig, spec: clip.ClipSpec, dim: int) -> _Pnsfw:
    if isinstance(config, NsfwHeadConfig):
        return NsfwHead(config, dim)
    return NsfwZeroShot(config, spec)
