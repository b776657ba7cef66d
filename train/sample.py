"""Sampling with classifier-free guidance, and the labelled PNG grids validation writes."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from PIL import Image, ImageDraw, ImageFont

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def guided_latents(model: Denoiser, training_scheduler: DDPMScheduler, states: torch.Tensor,
                   unconditional: torch.Tensor, latent_shape: tuple[int, ...], guidance_scale: float, steps: int,
                   generator: torch.Generator) -> torch.Tensor:
    """DDIM from pure noise, guided: eps = uncond + scale * (cond - uncond), batched in one call."""
    scheduler = DDIMScheduler.from_config(training_scheduler.config)
    scheduler.set_timesteps(steps, device=states.device)
    latents = torch.randn((states.shape[0], *latent_shape), generator=generator).to(states.device)
    latents = latents * scheduler.init_noise_sigma
    both = torch.cat([unconditional, states])
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        uncond, cond = model(model_input, t.expand(model_input.shape[0]), both).float().chunk(2)
        latents = scheduler.step(uncond + guidance_scale * (cond - uncond), t, latents).prev_sample
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


def save_grid(images: list[Image.Image], labels: list[str], path: Path, step: int, columns: int = 4) -> Path:
    """The grid as PNG and its labels as JSON beside it, each written to a temp file then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png.tmp", delete=False) as tmp:
        grid(images, labels, columns).save(tmp, format="PNG")
    os.replace(tmp.name, path)
    labels_path = path.with_suffix(".json")
    labels_path.with_suffix(".json.tmp").write_text(json.dumps({"step": step, "labels": labels}, indent=2))
    os.replace(labels_path.with_suffix(".json.tmp"), labels_path)
    return path
