"""Samplers by name, sampling with classifier-free guidance, and labelled PNG grids."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from curate.io import atomic_path, write_text_atomic

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Sampler:
    """A diffusers scheduler under the name people know it by (A1111's, written into PNGs)."""

    label: str
    cls: str  # diffusers class name
    options: dict[str, Any]
    karras: bool = False  # whether Karras sigmas are offered


SAMPLERS = {
    "ddim": Sampler("DDIM", "DDIMScheduler", {"set_alpha_to_one": False}),
    "euler": Sampler("Euler", "EulerDiscreteScheduler", {}, karras=True),
    "euler-a": Sampler("Euler a", "EulerAncestralDiscreteScheduler", {}),
    "dpmpp-2m": Sampler("DPM++ 2M", "DPMSolverMultistepScheduler",
                        {"algorithm_type": "dpmsolver++", "solver_order": 2}, karras=True),
    "pndm": Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}),
    "lms": Sampler("LMS", "LMSDiscreteScheduler", {}, karras=True),
}
SAMPLER_ALIASES = {"plms": "pndm", "euler_a": "euler-a", "dpm++2m": "dpmpp-2m"}


def sampler(name: str) -> Sampler:
    key = SAMPLER_ALIASES.get(name.lower(), name.lower())
    if key not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)} (plms = pndm)")
    return SAMPLERS[key]


def sampler_label(name: str, karras: bool) -> str:
    return sampler(name).label + (" Karras" if karras else "")


def make_scheduler(scheduler_config: dict[str, Any], name: str, karras: bool = False) -> Any:
    """The sampler `name` on the model's training schedule (betas, prediction type)."""
    import diffusers

    chosen = sampler(name)
    if karras and not chosen.karras:
        offered = ", ".join(n for n, s in SAMPLERS.items() if s.karras)
        raise ValueError(f"sampler {name!r} has no Karras sigmas; they apply to {offered}")
    options = chosen.options | ({"use_karras_sigmas": True} if karras else {})
    return getattr(diffusers, chosen.cls).from_config(scheduler_config, **options)


@torch.no_grad()
def guided_latents(model: Denoiser, scheduler: Any, states: torch.Tensor, unconditional: torch.Tensor,
                   latent_shape: tuple[int, ...], guidance_scale: float, steps: int,
                   generators: list[torch.Generator]) -> torch.Tensor:
    """Latents sampled from noise with classifier-free guidance: uncond + scale * (cond - uncond).

    Step for step what diffusers' StableDiffusionPipeline does, so an exported model gives the
    same image for the same seed. One CPU generator per image draws its starting noise and its
    ancestral noise (diffusers' randn_tensor with a generator list), so an image depends on its
    own seed only, not on the batch it was drawn in. A scale of 1 skips the unconditional pass,
    as the pipeline does.
    """
    from diffusers.utils.torch_utils import randn_tensor

    scheduler.set_timesteps(steps, device=states.device)
    latents = randn_tensor((len(generators), *latent_shape), generator=generators, device=states.device,
                           dtype=states.dtype) * scheduler.init_noise_sigma
    guided = guidance_scale > 1.0
    context = torch.cat([unconditional, states]) if guided else states
    step_options = {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents, latents]) if guided else latents, t)
        prediction = model(model_input, t, context)
        if guided:
            uncond, cond = prediction.chunk(2)
            prediction = uncond + guidance_scale * (cond - uncond)
        latents = scheduler.step(prediction, t, latents, **step_options).prev_sample
    return latents


def to_images(pixels: torch.Tensor) -> list[Image.Image]:
    """Float NCHW in [-1, 1] -> PIL images."""
    array = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in array]


def _wrap(text: str, width: int) -> list[str]:
    """At most three lines of `width` characters; words longer than a line (keys) are cut."""
    words = [word[i:i + width] for word in text.split() for i in range(0, len(word), width)]
    lines, line = [], ""
    for word in words or [""]:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return (lines + [line])[:3]


def grid(images: list[Image.Image], labels: list[str], columns: int = 4) -> Image.Image:
    """Images in rows of `columns`, each with its label (prompt, key) written under it."""
    font = ImageFont.load_default()
    size = max(max(im.width, im.height) for im in images)
    cell_width = max(size, 128)
    chars = max(8, cell_width // 6)
    text_height = 3 * 12 + 4
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    canvas = Image.new("RGB", (columns * cell_width, rows * (size + text_height)), "white")
    draw = ImageDraw.Draw(canvas)
    for index, (image, label) in enumerate(zip(images, labels)):
        x, y = (index % columns) * cell_width, (index // columns) * (size + text_height)
        canvas.paste(image, (x + (cell_width - image.width) // 2, y))
        for n, line in enumerate(_wrap(label or "(empty prompt)", chars)):
            draw.text((x + 2, y + size + 2 + 12 * n), line, fill="black", font=font)
    return canvas


def save_grid(images: list[Image.Image], labels: list[str], path: Path, step: int | None = None,
              columns: int = 4) -> Path:
    """The grid as PNG and its labels as JSON beside it, each written atomically."""
    with atomic_path(path) as tmp:
        grid(images, labels, columns).save(tmp, format="PNG")
    meta = ({"step": step} if step is not None else {}) | {"labels": labels}
    write_text_atomic(json.dumps(meta, indent=2), path.with_suffix(".json"))
    return path
