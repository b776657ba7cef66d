"""A trained model folder, loaded for sampling, export, model cards and checks.

The diffusion job's ``final/`` folder is self-contained (``train.loop``)::

    unet/           diffusers UNet2DConditionModel (EMA weights when EMA was on)
    vae/            the frozen AutoencoderKL it was trained with (scaling_factor in its config)
    conditioning/   the frozen open_clip tower: conditioning.json + open_clip.safetensors
    scheduler/      the training noise schedule (DDPMScheduler config)
    config.yaml     the training config; training.json: when, processes, shard files

Commands take that folder, or the training run folder holding ``diffusion/final``.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curate.io import atomic_path, write_text_atomic
from train import config as config_io
from train import sample
from train.config import TrainConfig
from train.loop import TRAINING_RECORD
from train.models import ConditioningEncoder

log = logging.getLogger(__name__)
PNG_KEY = "parameters"  # the PNG text chunk A1111 and its readers use
SAMPLES_INDEX = "samples.jsonl"  # beside the PNGs of `cleanroom sample`: one line per image
CARD_GRID = "samples.png"  # beside a model card, which links it by this relative name
PARTS = ("unet", "vae", "conditioning", "scheduler", "config.yaml", TRAINING_RECORD)


def model_folder(path: Path) -> Path:
    """The model folder named by `path`: itself, or `path/diffusion/final` of a training run."""
    path = Path(path)
    for candidate in (path, path / "final", path / "diffusion" / "final"):
        if (candidate / "unet").is_dir() and (candidate / "conditioning").is_dir():
            missing = [part for part in PARTS if not (candidate / part).exists()]
            if missing:
                raise FileNotFoundError(f"{candidate}: incomplete model folder, missing {', '.join(missing)}")
            return candidate
    raise FileNotFoundError(f"{path}: not a model folder (unet/, vae/, conditioning/, scheduler/ from "
                            f"`cleanroom train diffusion`) nor a training run holding diffusion/final")


@dataclass
class Model:
    folder: Path
    unet: Any  # diffusers UNet2DConditionModel
    vae: Any  # diffusers AutoencoderKL
    encoder: ConditioningEncoder
    scheduler_config: dict[str, Any]  # the training schedule, what every sampler is built from
    config: TrainConfig
    training: dict[str, Any]  # training.json

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        return self.config.data.resolution

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype


def load(path: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Model:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = model_folder(path)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype)
    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype)
    encoder = ConditioningEncoder.load(folder / "conditioning")
    config = config_io.parse((folder / "config.yaml").read_text(), str(folder / "config.yaml"))
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    training = json.loads((folder / TRAINING_RECORD).read_text())
    for network in (unet, vae, encoder):
        network.to(device).eval().requires_grad_(False)
    encoder.to(dtype=dtype)
    return Model(folder, unet, vae, encoder, scheduler_config, config, training)



class SampleSettings(BaseModel):
    """How images are drawn; written into every PNG and saved beside the images."""

    model_config = ConfigDict(extra="forbid")

    sampler: str = "dpmpp-2m"
    karras: bool = False
    steps: int = Field(default=25, ge=1)
    cfg_scale: float = Field(default=7.5, ge=1.0)
    negative_prompt: str = ""
    width: int | None = Field(default=None, ge=8)  # None: the training resolution
    height: int | None = Field(default=None, ge=8)
    seed: int = Field(default=0, ge=0)  # image i of a call gets seed + i, as A1111 numbers a batch

    @model_validator(mode="after")
    def _known_sampler(self) -> "SampleSettings":
        chosen = sample.sampler(self.sampler)
        if self.karras and not chosen.karras:
            raise ValueError(f"sampler {self.sampler!r} has no Karras sigmas")
        return self

    @property
    def label(self) -> str:
        return sample.sampler_label(self.sampler, self.karras)


def image_size(model: Model, settings: SampleSettings) -> tuple[int, int]:
    """(width, height), checked against what the VAE and the UNet's downsampling can divide."""
    width, height = settings.width or model.resolution, settings.height or model.resolution
    multiple = model.vae_scale_factor * 2 ** (len(model.unet.config.block_out_channels) - 1)
    if width % multiple or height % multiple:
        raise ValueError(f"size {width}x{height}: width and height must be multiples of {multiple} for "
                         f"{model.folder} (autoencoder x{model.vae_scale_factor}, UNet downsampling)")
    return width, height


def _require_conditioning(model: Model, kind: str) -> None:
    """Refuse the wrong kind of input in one line that names what the model takes."""
    encoder = model.encoder.config.encoder
    if encoder == kind:
        return
    if encoder == "image":
        raise ValueError(f"{model.folder}: conditioned on images (SD image variations), not prompts; give "
                         f"reference images (--image IMG)")
    raise ValueError(f"{model.folder}: conditioned on text prompts (--prompt, --prompts), not images; --image is "
                     f"for a model trained with diffusion.conditioning.encoder: image")


def _draw(model: Model, conditions: list[Any], encode: Callable[[list[Any]], tuple[torch.Tensor, torch.Tensor]],
          settings: SampleSettings, first_seed: int | None, batch_size: int) -> list[Image.Image]:
    """One image per condition, condition i drawn from seed `first_seed + i`; `encode` gives a batch's
    states and the unconditional states guidance pulls away from."""
    width, height = image_size(model, settings)
    shape = (model.vae.config.latent_channels, height // model.vae_scale_factor, width // model.vae_scale_factor)
    first = settings.seed if first_seed is None else first_seed
    images: list[Image.Image] = []
    for start in range(0, len(conditions), batch_size):
        states, negative = encode(conditions[start:start + batch_size])
        generators = [torch.Generator().manual_seed(first + start + i) for i in range(len(states))]
        scheduler = sample.make_scheduler(model.scheduler_config, settings.sampler, settings.karras)
        latents = sample.guided_latents(lambda x, t, c: model.unet(x, t, encoder_hidden_states=c).sample,
                                        scheduler, states.to(model.dtype), negative.to(model.dtype), shape,
                                        settings.cfg_scale, settings.steps, generators)
        images += sample.to_images(model.vae.decode(latents / model.vae.config.scaling_factor).sample)
    return images


@torch.no_grad()
def generate(model: Model, prompts: list[str], settings: SampleSettings, first_seed: int | None = None,
             batch_size: int = 4) -> list[Image.Image]:
    """One image per prompt, prompt i drawn from seed `first_seed + i` (default settings.seed + i)."""
    _require_conditioning(model, "text")

    def encode(batch: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return (model.encoder(batch, None, None),
                model.encoder([settings.negative_prompt] * len(batch), None, None))

    return _draw(model, prompts, encode, settings, first_seed, batch_size)


def clip_image_processor(encoder: ConditioningEncoder) -> Any:
    """The CLIPImageProcessor that prepares images for the encoder's image tower: shortest side resized
    (bicubic) and centre-cropped to the tower's input size, then normalised with the tower's mean and std.

    The sampler and the exported StableDiffusionImageVariationPipeline both prepare reference images with
    it, so they condition on the same embedding. Training conditioned on its own batches resized on the
    tensor (ConditioningEncoder), which agrees with this up to resampling differences.
    """
    from transformers import CLIPImageProcessor

    height, width = encoder.image_size
    return CLIPImageProcessor(do_resize=True, size={"shortest_edge": max(height, width)}, resample=Image.BICUBIC,
                              do_center_crop=True, crop_size={"height": height, "width": width},
                              do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                              image_mean=encoder.mean.flatten().tolist(), image_std=encoder.std.flatten().tolist(),
                              do_convert_rgb=True)


@torch.no_grad()
def image_states(encoder: ConditioningEncoder, images: list[Image.Image]) -> torch.Tensor:
    """The reference images' projected embeddings as one token each: what an image-variations UNet attends to."""
    pixels = clip_image_processor(encoder)(images=images, return_tensors="pt").pixel_values
    return encoder.clip.encode_image(pixels.to(encoder.device, encoder.mean.dtype)).unsqueeze(1)


@torch.no_grad()
def generate_variations(model: Model, images: list[Image.Image], settings: SampleSettings,
                        first_seed: int | None = None, batch_size: int = 4) -> list[Image.Image]:
    """One variation per reference image, image i drawn from seed `first_seed + i`; guidance pulls away from
    the zero embedding, the dropped-image input of training (no negative prompt: there is no text)."""
    _require_conditioning(model, "image")
    if settings.negative_prompt:
        raise ValueError(f"{model.folder}: a negative prompt applies to text-conditioned models; an image-variations "
                         f"model guides away from a zero image embedding")

    def encode(batch: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        return image_states(model.encoder, batch), model.encoder.unconditional(len(batch))

    return _draw(model, images, encode, settings, first_seed, batch_size)


def read_image(path: Path) -> Image.Image:
    """A reference image for variations, decoded, upright and in RGB."""
    from PIL import ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image")
    try:
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not an image the sampler can read ({e})") from None


def model_hash(model: Model) -> str | None:
    """The short hash A1111 shows for the model's single file (what `cleanroom export` writes beside the pipeline):
    the first 10 hex digits of its sha256; None when the model has no single file (its export is refused)."""
    from train import export  # export builds on this module

    try:
        return export.single_file_sha256(model)[:10]
    except export.ExportError as e:
        log.warning("%s: no Model hash in the PNGs: %s", model.folder, e)
        return None


def infotext(prompt: str, settings: SampleSettings, seed: int, size: tuple[int, int], model: str,
             hash_: str | None) -> str:
    """The "parameters" text A1111 writes into its PNGs, which image viewers and tools parse."""
    lines = [prompt] + ([f"Negative prompt: {settings.negative_prompt}"] if settings.negative_prompt else [])
    fields = {"Steps": settings.steps, "Sampler": settings.label, "CFG scale": settings.cfg_scale, "Seed": seed,
              "Size": f"{size[0]}x{size[1]}"} | ({"Model hash": hash_} if hash_ else {}) | {"Model": model}
    return "\n".join(lines + [", ".join(f"{k}: {v}" for k, v in fields.items())])


def parse_infotext(text: str | None) -> dict[str, str]:
    """Parameters text as fields: prompt, negative prompt and each `Key: value` of the "Steps: ..." line."""
    lines = (text or "").strip().splitlines()
    fields = {}
    if lines and lines[-1].startswith("Steps: "):
        fields = dict(part.split(": ", 1) for part in lines.pop().split(", ") if ": " in part)
    negative = [i for i, line in enumerate(lines) if line.startswith("Negative prompt: ")]
    cut = negative[0] if negative else len(lines)
    return {"prompt": "\n".join(lines[:cut]).strip(),
            "negative prompt": "\n".join(lines[cut:]).removeprefix("Negative prompt: ")} | fields


def read_infotext(path: Path) -> dict[str, str]:
    """An image's parameters (see `infotext`) as fields; empty fields for an image without them."""
    with Image.open(path) as image:
        text = image.info.get(PNG_KEY)
    return parse_infotext(text if isinstance(text, str) else None)


def save_png(image: Image.Image, path: Path, parameters: str) -> None:
    info = PngInfo()
    info.add_text(PNG_KEY, parameters)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)


def read_prompts(path: Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    prompts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"{path}: no prompts (one per line; # starts a comment)")
    return prompts


def sample_to_folder(model: Model, prompts: list[str], settings: SampleSettings, out: Path,
                     images_per_prompt: int = 1, batch_size: int = 4) -> list[Path]:
    """PNGs with their parameters, a labelled grid, settings.json and samples.jsonl in `out`."""
    wanted = [p for p in prompts for _ in range(images_per_prompt)]
    images = generate(model, wanted, settings, batch_size=batch_size)
    return _save_samples(model, settings, out, images, [{"prompt": p} for p in wanted])


def variations_to_folder(model: Model, references: list[Path], settings: SampleSettings, out: Path,
                         images_per_image: int = 1, batch_size: int = 4) -> list[Path]:
    """Variations of each reference image, saved as `sample_to_folder` saves prompts' images."""
    _require_conditioning(model, "image")
    decoded = {path: read_image(path) for path in references}  # every file checked before any drawing
    wanted = [path for path in references for _ in range(images_per_image)]
    images = generate_variations(model, [decoded[p] for p in wanted], settings, batch_size=batch_size)
    return _save_samples(model, settings, out, images, [{"image": str(p)} for p in wanted])


def _save_samples(model: Model, settings: SampleSettings, out: Path, images: list[Image.Image],
                  conditions: list[dict[str, str]]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(settings.model_dump_json(indent=2), out / "settings.json")
    size, hash_ = image_size(model, settings), model_hash(model)
    paths, rows = [], []
    for index, (condition, image) in enumerate(zip(conditions, images)):
        seed = settings.seed + index
        path = out / f"{index:05d}-{seed}.png"
        save_png(image, path, infotext(condition.get("prompt", ""), settings, seed, size, model.name, hash_))
        paths.append(path)
        rows.append({"file": path.name, **condition, "seed": seed, "model": str(model.folder)})
    write_text_atomic("".join(json.dumps(r) + "\n" for r in rows), out / SAMPLES_INDEX)
    labels = [f"{r['prompt'] if 'prompt' in r else 'variation of ' + Path(r['image']).name} (seed {r['seed']})"
              for r in rows]
    sample.save_grid(images, labels, out / "grid.png")
    return paths


def card_settings() -> SampleSettings:
    """How a model card's sample grid is drawn: prompt i of the card's prompts from seed i."""
    return SampleSettings(sampler="dpmpp-2m", karras=True, steps=20, cfg_scale=7.5, seed=0)


def card_prompts(config: TrainConfig) -> list[str]:
    """The prompts a model card shows samples of: the ones its training validated on."""
    return config.diffusion.validation.prompts


def card_grid(model: Model) -> bytes:
    """A model card's sample grid as PNG bytes: `card_prompts` drawn with `card_settings`, labelled with each
    prompt and seed (text-conditioned models: an image-variations model has no prompts to show)."""
    settings, prompts = card_settings(), card_prompts(model.config)
    images = generate(model, prompts, settings)
    buffer = io.BytesIO()
    sample.grid(images, [f"{p} (seed {settings.seed + i})" for i, p in enumerate(prompts)]).save(buffer, format="PNG")
    return buffer.getvalue()
