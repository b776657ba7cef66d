"""open_clip models, named as open_clip names them (model + pretrained tag) or from a local file.

Every model stage (embedder, CoCa captioner, image-text similarity) loads through
``load`` so the same spec means the same model everywhere, and ``ClipSpec.describe``
is what a run records as the model behind a score. Tiny random-initialised configs
for tests and the offline demo live in ``model_configs/`` and are registered by name.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CONFIG_DIR = Path(__file__).with_name("model_configs")
RANDOM_INIT_SEED = 0


class ClipSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(description="An open_clip model name, e.g. ViT-L-14, coca_ViT-B-32, cleanroom-tiny-clip.")
    pretrained: str | None = Field(None, description="An open_clip pretrained tag, e.g. openai, laion2b_s32b_b82k.")
    checkpoint: str | None = Field(None, description="A local weights file instead of a tag; neither: random init.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when there is a GPU.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description=(
        "auto: bf16 autocast on a GPU that has it (fp16 on one that does not), fp32 on the CPU."))

    @model_validator(mode="after")
    def _one_source_of_weights(self) -> "ClipSpec":
        if self.pretrained and self.checkpoint:
            raise ValueError("give either pretrained (an open_clip tag) or checkpoint (a local file), not both")
        return self

    def describe(self) -> str:
        weights = self.checkpoint or self.pretrained or "random-init"
        return f"open_clip:{self.model}/{weights}"


@dataclass
class LoadedClip:
    model: Any
    preprocess: Any  # the model's own eval transform: PIL image -> tensor
    tokenizer: Any
    device: str
    dtype: Any
    embed_dim: int


@functools.cache
def register_bundled_configs() -> None:
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def pick_precision(requested: str, device: str) -> str:
    import torch

    if requested != "auto":
        return requested
    if device == "cpu":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def load(spec: ClipSpec, initialise: Callable[[Any], None] | None = None) -> LoadedClip:
    """Build the model with its transform and tokenizer, frozen, in eval mode, on its device.

    A model without weights (no tag, no checkpoint) is drawn from a fixed seed and then
    finished by ``initialise``, so tests and the offline demo get the same model in every
    actor, process and run: embeddings and captions from two actors or an earlier run stay
    comparable. The global RNG is left as it was.
    """
    import open_clip
    import torch

    register_bundled_configs()
    if spec.model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {spec.model!r}; register its config or pick one of "
                         f"open_clip.list_models()")
    if spec.checkpoint and not Path(spec.checkpoint).is_file():
        raise FileNotFoundError(f"{spec.checkpoint}: checkpoint for {spec.model} not found")
    device = pick_device(spec.device)
    with torch.random.fork_rng(devices=[]):  # open_clip initialises on the CPU, then moves
        torch.manual_seed(RANDOM_INIT_SEED)
        model, preprocess = _create(spec, device)
        if initialise is not None and not (spec.pretrained or spec.checkpoint):
            initialise(model)
    model.eval().requires_grad_(False)
    precision = pick_precision(spec.precision, device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return LoadedClip(model=model, preprocess=preprocess, tokenizer=open_clip.get_tokenizer(spec.model),
                      device=device, dtype=dtype, embed_dim=_embed_dim(model))


def _create(spec: ClipSpec, device: str) -> tuple[Any, Any]:
    import open_clip

    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.model, pretrained=spec.checkpoint or spec.pretrained, device=device)
    except RuntimeError as e:
        raise RuntimeError(f"{spec.describe()}: cannot load weights ({e}); without network access give a "
                           f"local file as checkpoint:") from e
    return model, preprocess


def _embed_dim(model: Any) -> int:
    import torch

    with torch.no_grad():
        size = model.visual.image_size
        size = size if isinstance(size, (tuple, list)) else (size, size)
        return int(model.encode_image(torch.zeros(1, 3, *size, device=next(model.parameters()).device)).shape[-1])
