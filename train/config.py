"""The training config: one typed YAML file (``pipelines/train-*.yaml``) for both jobs.

Shared sections (``data``, ``accelerate``) and one section per job (``autoencoder``,
``diffusion``). Validated at load with errors that name the file and the field, and saved
(resolved) inside every checkpoint, so a checkpoint says exactly how it was made and a
resumed run can refuse a config that changed underneath it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curate.config import load_yaml, validate


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class BucketConfig(Strict):
    """Aspect-ratio buckets: each sample is resized and cropped to the bucket nearest its aspect ratio, and
    every batch holds one bucket. A list of sizes, or the sizes generated for a pixel budget."""

    sizes: list[tuple[int, int]] | None = None  # (width, height) of each bucket
    pixels: int | None = Field(default=None, ge=64)  # budget: per width, the tallest height within it
    step: int = Field(default=64, ge=8)  # every side a multiple of this (SD: 64, 8 latent pixels)
    max_aspect: float = Field(default=2.0, ge=1.0)  # of generated buckets

    @model_validator(mode="after")
    def _one_source_of_sizes(self) -> "BucketConfig":
        if (self.sizes is None) == (self.pixels is None):
            raise ValueError("give either sizes (a list of [width, height]) or pixels (a budget), not both")
        wrong = [size for size in self.sizes or [] if min(size) < 1 or size[0] % self.step or size[1] % self.step]
        if wrong:
            raise ValueError(f"bucket sizes {wrong} are not positive multiples of step {self.step}")
        if self.sizes is not None and not self.sizes:
            raise ValueError("sizes: at least one bucket")
        return self


class DataConfig(Strict):
    # A local path, a folder of *.tar, a brace pattern (shard-{00000..00009}.tar) or an
    # fsspec URL; relative local paths are relative to this file. `--shards` overrides it.
    shards: str | None = None
    # A latent cache (`cleanroom train cache`) the diffusion job reads instead of encoding the shards' images
    # on every step; the autoencoder job always reads the shards. A local folder, relative like shards.
    cache: str | None = None
    resolution: int = Field(default=64, ge=8)
    buckets: BucketConfig | None = None  # None: square crops of `resolution`
    crop: Literal["center", "random"] = "center"
    flip: bool = False  # random horizontal flip
    batch_size: int = Field(default=4, ge=1)  # per process and micro-batch
    shuffle_buffer: int = Field(default=256, ge=1)  # 1 keeps shard order
    caption_dropout: float = Field(default=0.1, ge=0.0, le=1.0)  # SD v1 trained its CFG with 10%
    workers: int = Field(default=0, ge=0)  # DataLoader worker processes per training process
    bad_sample_log_seconds: float = Field(default=30.0, ge=0.0)  # at most one bad-sample log line per interval


class LossCheck(Strict):
    """Stops a run that can no longer learn: `patience` optimizer steps in a row with a non-finite loss or
    (fp16) a collapsed loss scale. The error names the step and what to change."""

    patience: int = Field(default=10, ge=1, description="consecutive bad optimizer steps that stop the run")
    min_loss_scale: float = Field(default=1.0, gt=0, description=(
        "fp16: a loss scale below this has collapsed (GradScaler starts at 65536 and halves it on every "
        "overflow, so it only gets here when the gradients overflow step after step)"))


class AccelerateConfig(Strict):
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(default="no", description=(
        "autocast through accelerate; fp16 adds accelerate's GradScaler and needs a GPU, bf16 also runs on CPU"))
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    log_with: Literal["tensorboard", "wandb", "none"] = Field(default="tensorboard", description=(
        "scalars and validation grids; wandb honours WANDB_MODE=offline (the run folder under logs/wandb/)"))
    loss_check: LossCheck = LossCheck()


class OptimConfig(Strict):
    """AdamW with linear warmup, then constant: the SD v1 recipe (1e-4 after 10k warmup steps)."""

    lr: float = Field(default=1e-4, gt=0)
    warmup_steps: int = Field(default=0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(default=1e-2, ge=0)
    eps: float = Field(default=1e-8, gt=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)


class EmaConfig(Strict):
    decay: float = Field(default=0.9999, gt=0, lt=1)
    warmup: bool = True  # decay ramps up as 1 - (1 + step)^-power, so short runs still average something
    power: float = Field(default=2 / 3, gt=0)
    update_after_step: int = Field(default=0, ge=0)


class LoopConfig(Strict):
    steps: int = Field(ge=1)  # optimizer steps of the whole run
    checkpoint_every: int = Field(default=500, ge=1)
    keep_checkpoints: int = Field(default=3, ge=1)
    validate_every: int = Field(default=500, ge=1)
    log_every: int = Field(default=10, ge=1)


class Phase(Strict):
    """One stretch of a multi-resolution schedule: its steps, and what it trains at (else the data section's)."""

    steps: int = Field(ge=1)
    resolution: int | None = Field(default=None, ge=8)  # square crops of this side (no buckets)
    buckets: BucketConfig | None = None  # or aspect buckets
    batch_size: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0)  # the optimizer's rate after warmup

    @model_validator(mode="after")
    def _resolution_or_buckets(self) -> "Phase":
        if self.resolution is not None and self.buckets is not None:
            raise ValueError("give resolution (square crops) or buckets, not both")
        return self


class PerceptualConfig(Strict):
    """LPIPS-VGG from local weights. Off by default: its VGG was trained on ImageNet."""

    vgg16: str  # a torchvision vgg16 state dict (features.* keys), e.g. vgg16-397923af.pth
    lpips: str  # the LPIPS linear heads (lin0..lin4), e.g. lpips/weights/v0.1/vgg.pth
    weight: float = Field(default=1.0, gt=0)


class ComputeConfig(Strict):
    """How the trained network computes: the same model and loss, at other speeds and memory."""

    attention: Literal["sdpa", "default"] = Field(default="sdpa", description=(
        "sdpa: torch's scaled_dot_product_attention (diffusers AttnProcessor2_0, flash/memory-efficient kernels "
        "on GPUs); default: diffusers' plain AttnProcessor (bmm, softmax, bmm)"))
    compile: bool = Field(default=False, description=(
        "torch.compile the network in place (the first steps, and validation's first call, compile)"))
    channels_last: bool = Field(default=False, description="the network's weights in channels-last memory format")
    gradient_checkpointing: bool | None = Field(default=None, description=(
        "recompute activations in the backward pass: less memory, about a third more compute; "
        "None: what the named model size sets (on for sd1-base)"))


class AutoencoderValidation(Strict):
    images: int = Field(default=8, ge=1)  # reconstructions in the grid


class AutoencoderJob(Strict):
    model: str = "tiny"  # a named size under train/configs/autoencoder/
    init: str | None = None  # a local checkpoint to fine-tune from (diffusers folder, our checkpoint, .safetensors)
    kl_weight: float = Field(default=1e-6, ge=0)
    perceptual: PerceptualConfig | None = None
    # The latents' scale for diffusion (SD v1: 0.18215); "auto" measures 1/std on training batches at export.
    scaling_factor: float | Literal["auto"] = "auto"
    scaling_samples: int = Field(default=256, ge=2)  # from the start of the shards
    optim: OptimConfig = OptimConfig(lr=4.5e-6)
    ema: EmaConfig | None = None
    loop: LoopConfig
    # A multi-resolution schedule (e.g. 256 px, then 512 px, then buckets); its steps add up to loop.steps
    phases: list[Phase] = Field(default_factory=list)
    validation: AutoencoderValidation = AutoencoderValidation()
    compute: ComputeConfig = ComputeConfig()


class ConditioningConfig(Strict):
    """A frozen open_clip tower: its text token states, or its image embedding (SD image variations)."""

    encoder: Literal["text", "image"] = "text"
    model: str = "cleanroom-tiny-text"  # an open_clip model name (bundled tiny configs are registered)
    pretrained: str | None = None  # an open_clip pretrained tag or a local weights file; None = random init
    layer: Literal["last", "penultimate"] = "last"  # penultimate text states, as SD 2 used with OpenCLIP-H

    @model_validator(mode="after")
    def _layer_only_for_text(self) -> "ConditioningConfig":
        if self.encoder == "image" and self.layer != "last":
            raise ValueError("layer applies to the text encoder only; the image encoder gives one embedding")
        return self


class NoiseSchedule(Strict):
    num_train_timesteps: int = Field(default=1000, ge=2)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "scaled_linear"
    beta_start: float = Field(default=0.00085, gt=0)
    beta_end: float = Field(default=0.012, gt=0)


class OffsetNoise(Strict):
    strength: float = Field(default=0.0, ge=0)  # Mitsua's card: 0.02 over its last steps
    probability: float = Field(default=1.0, ge=0, le=1)
    start_step: int = Field(default=0, ge=0)  # active from this optimizer step on


class DiffusionValidation(Strict):
    prompts: list[str] = Field(default_factory=lambda: ["a photograph"], min_length=1)  # text conditioning
    images: int = Field(default=4, ge=1)  # image conditioning: reference images from the start of the shards
    guidance_scale: float = Field(default=7.5, ge=1.0)
    inference_steps: int = Field(default=25, ge=1)
    seed: int = 0


class DiffusionJob(Strict):
    model: str = "tiny"  # a named size under train/configs/unet/
    overrides: dict[str, Any] = Field(default_factory=dict)  # merged into the named UNet config
    init: str | None = None  # a local UNet checkpoint to fine-tune from
    autoencoder: str | None = None  # the frozen autoencoder; None = OUT/autoencoder/final
    conditioning: ConditioningConfig = ConditioningConfig()
    noise: NoiseSchedule = NoiseSchedule()
    prediction: Literal["epsilon", "v_prediction"] = "epsilon"
    offset_noise: OffsetNoise = OffsetNoise()
    snr_gamma: float | None = Field(default=5.0, gt=0)  # min-SNR weighting; None = plain MSE
    timestep_bins: int = Field(default=10, ge=1)  # loss logged per bin of timesteps
    optim: OptimConfig = OptimConfig()
    ema: EmaConfig | None = EmaConfig()
    loop: LoopConfig
    # A multi-resolution schedule (e.g. 256 px, then 512 px, then buckets); its steps add up to loop.steps
    phases: list[Phase] = Field(default_factory=list)
    validation: DiffusionValidation = DiffusionValidation()
    compute: ComputeConfig = ComputeConfig()


class TrainConfig(Strict):
    name: str
    seed: int = 0
    data: DataConfig = DataConfig()
    accelerate: AccelerateConfig = AccelerateConfig()
    autoencoder: AutoencoderJob
    diffusion: DiffusionJob

    @model_validator(mode="after")
    def _phases_cover_the_run(self) -> "TrainConfig":
        for name in ("autoencoder", "diffusion"):
            job = getattr(self, name)
            total = sum(phase.steps for phase in job.phases)
            if job.phases and total != job.loop.steps:
                raise ValueError(f"{name}.phases: their steps add up to {total} but {name}.loop.steps is "
                                 f"{job.loop.steps}")
        return self


def phase_at(phases: list[Phase], step: int) -> int | None:
    """The index of the phase that optimizer step `step` + 1 belongs to (None without phases)."""
    end = 0
    for index, phase in enumerate(phases):
        end += phase.steps
        if step < end:
            return index
    return len(phases) - 1 if phases else None


def phase_data(data: DataConfig, phase: Phase | None) -> DataConfig:
    """The data settings a phase trains with: its resolution or buckets (either replaces both), its batch."""
    if phase is None:
        return data
    update: dict[str, Any] = {}
    if phase.resolution is not None:
        update |= {"resolution": phase.resolution, "buckets": None}
    if phase.buckets is not None:
        update["buckets"] = phase.buckets
    if phase.batch_size is not None:
        update["batch_size"] = phase.batch_size
    return data.model_copy(update=update)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _is_local(location: str) -> bool:
    return "://" not in location


def _is_weights_path(pretrained: Any) -> bool:
    """An open_clip `pretrained` value that names a file rather than a tag like `openai`."""
    return isinstance(pretrained, str) and ("/" in pretrained or pretrained.endswith(WEIGHT_SUFFIXES))


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative local paths in the file are relative to the file, as in curate's pipelines."""

    def resolve(value: Any) -> Any:
        if isinstance(value, str) and _is_local(value) and not os.path.isabs(value):
            return str((base / value).resolve())
        return value

    data.setdefault("data", {})
    if isinstance(data["data"], dict):
        for field in ("shards", "cache"):
            if data["data"].get(field):
                data["data"][field] = resolve(data["data"][field])
    for job, fields in (("autoencoder", ("init",)), ("diffusion", ("init", "autoencoder"))):
        section = data.get(job)
        if isinstance(section, dict):
            for field in fields:
                if section.get(field):
                    section[field] = resolve(section[field])
            conditioning = section.get("conditioning")
            if isinstance(conditioning, dict) and _is_weights_path(conditioning.get("pretrained")):
                conditioning["pretrained"] = resolve(conditioning["pretrained"])
            perceptual = section.get("perceptual")
            if job == "autoencoder" and isinstance(perceptual, dict):
                for field in ("vgg16", "lpips"):
                    if perceptual.get(field):
                        perceptual[field] = resolve(perceptual[field])
    return data


def load(path: Path) -> TrainConfig:
    data = load_yaml(Path(path))
    return validate(TrainConfig, _resolve_paths(data, Path(path).resolve().parent), path)


def with_shards(config: TrainConfig, shards: str | None, cache: str | None = None) -> TrainConfig:
    """The config with `--shards` and `--cache` applied (command-line paths are relative to the working
    directory)."""
    given = {name: location if not _is_local(location) or os.path.isabs(location) else str(Path(location).resolve())
             for name, location in (("shards", shards), ("cache", cache)) if location is not None}
    if not given:
        return config
    return config.model_copy(update={"data": config.data.model_copy(update=given)})


def dump(config: TrainConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def parse(text: str, origin: str) -> TrainConfig:
    """A config saved by `dump` (inside a checkpoint): already resolved, so no path rewriting."""
    return validate(TrainConfig, yaml.safe_load(text), origin)


# What a resumed run may change: how long it runs, what it reports and how it computes, not what it learns.
RESUMABLE_CHANGES = ("accelerate.log_with", "accelerate.loss_check.", "data.bad_sample_log_seconds",
                     "autoencoder.loop.", "autoencoder.validation.", "autoencoder.compute.", "diffusion.loop.",
                     "diffusion.validation.", "diffusion.compute.")


def blocking_differences(saved: TrainConfig, current: TrainConfig) -> list[str]:
    """The differences that forbid resuming: everything outside RESUMABLE_CHANGES."""
    return [name for name in differences(saved, current)
            if not any(name == allowed or name.startswith(allowed) for allowed in RESUMABLE_CHANGES)]


def differences(saved: TrainConfig, current: TrainConfig) -> list[str]:
    """Dotted names of the fields that differ between two configs."""

    def walk(a: Any, b: Any, prefix: str) -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [name for key in sorted(set(a) | set(b))
                    for name in walk(a.get(key), b.get(key), f"{prefix}{key}.")]
        return [] if a == b else [prefix.rstrip(".")]

    return walk(saved.model_dump(mode="json"), current.model_dump(mode="json"), "")
