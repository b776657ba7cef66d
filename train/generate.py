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

import hashlib
import json
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

PNG_KEY = "parameters"  # the PNG text chunk A1111 and its readers use
SAMPLES_INDEX = "samples.jsonl"  # beside the PNGs of `cleanroom sample`: one line per image
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


@torch.no_grad()
def generate(model: Model, prompts: list[str], settings: SampleSettings, first_seed: int | None = None,
             batch_size: int = 4) -> list[Image.Image]:
    """One image per prompt, prompt i drawn from seed `first_seed + i` (default settings.seed + i)."""
    if model.encoder.config.encoder != "text":
        raise ValueError(f"{model.folder}: conditioned on images (SD image variations), not prompts; sampling "
                         f"covers text-conditioned models (its training validation grids show variations)")
    width, height = image_size(model, settings)
    shape = (model.vae.config.latent_channels, height // model.vae_scale_factor, width // model.vae_scale_factor)
    first = settings.seed if first_seed is None else first_seed
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        states = model.encoder(batch, None, None).to(model.dtype)
        negative = model.encoder([settings.negative_prompt] * len(batch), None, None).to(model.dtype)
        generators = [torch.Generator().manual_seed(first + start + i) for i in range(len(batch))]
        scheduler = sample.make_scheduler(model.scheduler_config, settings.sampler, settings.karras)
        latents = sample.guided_latents(lambda x, t, c: model.unet(x, t, encoder_hidden_states=c).sample,
                                        scheduler, states, negative, shape, settings.cfg_scale, settings.steps,
                                        generators)
        images += sample.to_images(model.vae.decode(latents / model.vae.config.scaling_factor).sample)
    return images


def model_hash(model: Model) -> str:
    """The first 10 hex digits of a sha256 over the UNet folder's files, as A1111 shortens a model hash."""
    digest = hashlib.sha256()
    for part in sorted(p for p in (model.folder / "unet").iterdir() if p.is_file()):
        with part.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:10]


def infotext(prompt: str, settings: SampleSettings, seed: int, size: tuple[int, int], model: str,
             hash_: str) -> str:
    """The "parameters" text A1111 writes into its PNGs, which image viewers and tools parse."""
    lines = [prompt] + ([f"Negative prompt: {settings.negative_prompt}"] if settings.negative_prompt else [])
    fields = {"Steps": settings.steps, "Sampler": settings.label, "CFG scale": settings.cfg_scale, "Seed": seed,
              "Size": f"{size[0]}x{size[1]}", "Model hash": hash_, "Model": model}
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
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(settings.model_dump_json(indent=2), out / "settings.json")
    wanted = [p for p in prompts for _ in range(images_per_prompt)]
    images = generate(model, wanted, settings, batch_size=batch_size)
    size, hash_ = image_size(model, settings), model_hash(model)
    paths, rows = [], []
    for index, (prompt, image) in enumerate(zip(wanted, images)):
        seed = settings.seed + index
        path = out / f"{index:05d}-{seed}.png"
        save_png(image, path, infotext(prompt, settings, seed, size, model.name, hash_))
        paths.append(path)
        rows.append({"file": path.name, "prompt": prompt, "seed": seed, "model": str(model.folder)})
    write_text_atomic("".join(json.dumps(r) + "\n" for r in rows), out / SAMPLES_INDEX)
    sample.save_grid(images, [f"{r['prompt']} (seed {r['seed']})" for r in rows], out / "grid.png")
    return paths
