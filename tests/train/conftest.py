"""Fixtures only the trainer's tests use; the shards and tiny models they share with tests/audit are in
tests/conftest.py (built with tests/trained.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from train.config import PerceptualConfig
from train.perceptual import vgg16_features


@pytest.fixture(scope="session")
def lpips_files(tmp_path_factory) -> PerceptualConfig:
    """Random weights in the released files' formats (torchvision vgg16, LPIPS lin heads)."""
    folder = tmp_path_factory.mktemp("lpips")
    torch.manual_seed(0)
    vgg = {f"features.{k}": v for k, v in vgg16_features().state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # the rest of a torchvision checkpoint is ignored
    torch.save(vgg, folder / "vgg16.pth")
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(heads, folder / "vgg.pth")
    return PerceptualConfig(vgg16=str(folder / "vgg16.pth"), lpips=str(folder / "vgg.pth"))


@pytest.fixture(scope="session")
def mixed(tmp_path_factory) -> Path:
    """Shards of landscape and portrait images, for aspect buckets (tests/trained.py `write_mixed`)."""
    from trained import write_mixed

    return write_mixed(tmp_path_factory.mktemp("mixed"))


@pytest.fixture(scope="session")
def random_autoencoder(tmp_path_factory) -> Callable[[int], Path]:
    """Random-initialised tiny autoencoders saved as diffusers folders (what the diffusion job loads), by seed."""
    from train import models

    made: dict[int, Path] = {}

    def make(seed: int = 0) -> Path:
        if seed not in made:
            made[seed] = tmp_path_factory.mktemp(f"vae-{seed}")
            torch.manual_seed(seed)
            models.build("autoencoder", "tiny").save_pretrained(made[seed])
        return made[seed]

    return make


Record = Callable[[dict[str, Any]], Any]


def batch_keys_and_shape(batch: dict[str, Any]) -> tuple[list[str], tuple[int, ...]]:
    return batch["keys"], tuple(batch["pixels"].shape)


@pytest.fixture(scope="session")
def straight_and_resumed() -> Callable:
    return _straight_and_resumed


def _straight_and_resumed(config, out: Path, stop_at: int, record: Record = batch_keys_and_shape):
    """A diffusion run straight through, and one killed after `stop_at` steps then resumed: the straight run's
    summary, both runs' batches (as `record` sees them), after checking both end with the same UNet."""
    from train.loop import train

    straight: list = []
    summary = train("diffusion", config, out / "straight", on_batch=lambda b: straight.append(record(b)))
    train("diffusion", config, out / "resumed", stop_at=stop_at)
    resumed: list = []
    train("diffusion", config, out / "resumed", resume=True, on_batch=lambda b: resumed.append(record(b)))
    a, b = (load_file(out / run / "diffusion" / "final" / "unet" / "diffusion_pytorch_model.safetensors")
            for run in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run ends with other weights"
    return summary, straight, resumed
