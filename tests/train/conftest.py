"""Shards and configs made in the test: tiny images, a few dozen samples, no curate run needed."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from train.config import PerceptualConfig, TrainConfig
from train.perceptual import vgg16_features

CORRUPT_KEY = "broken-0000"


def jpeg(rng: np.random.Generator, width: int, height: int) -> bytes:
    base = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(base).resize((width, height), Image.BILINEAR).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_shards(folder: Path, shards: int = 3, per_shard: int = 12, corrupt: bool = False, seed: int = 0) -> list[str]:
    """shard-NNNNN.tar files of KEY.jpg / KEY.txt / KEY.json, as curate writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    keys = []
    for s in range(shards):
        with wds.TarWriter(str(folder / f"shard-{s:05d}.tar")) as sink:
            if corrupt and s == 0:
                sink.write({"__key__": CORRUPT_KEY, "jpg": b"not a jpeg", "txt": "broken"})
            for i in range(per_shard):
                key = f"test-{s:02d}{i:03d}"
                width, height = (int(v) for v in rng.integers(40, 96, size=2))
                sink.write({"__key__": key, "jpg": jpeg(rng, width, height), "txt": f"caption of {key}",
                            "json": {"key": key, "license": "CC0-1.0"}})
                keys.append(key)
    return keys


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    write_shards(folder)
    return folder


def config_dict(shards: Path | str, **sections: Any) -> dict[str, Any]:
    """A tiny, fast config: 32 px, batch 4, a few steps, no tensorboard unless asked."""
    base: dict[str, Any] = {
        "name": "test",
        "seed": 0,
        "data": {"shards": str(shards), "resolution": 32, "batch_size": 4, "shuffle_buffer": 8,
                 "caption_dropout": 0.1, "crop": "random", "flip": True},
        "accelerate": {"mixed_precision": "no", "log_with": "none"},
        "autoencoder": {"model": "tiny", "optim": {"lr": 1e-3}, "ema": {"decay": 0.99},
                        "loop": {"steps": 4, "checkpoint_every": 2, "validate_every": 4, "log_every": 2},
                        "validation": {"images": 2}, "scaling_samples": 8},
        "diffusion": {"model": "tiny", "optim": {"lr": 1e-3}, "ema": {"decay": 0.99},
                      "conditioning": {"model": "cleanroom-tiny-text", "layer": "penultimate"},
                      "loop": {"steps": 4, "checkpoint_every": 2, "validate_every": 4, "log_every": 2},
                      "validation": {"prompts": ["a red square", ""], "inference_steps": 2}},
    }
    for name, values in sections.items():
        base[name] = base[name] | values if isinstance(values, dict) else values
    return base


def tiny_config(shards: Path | str, **sections: Any) -> TrainConfig:
    return TrainConfig.model_validate(config_dict(shards, **sections))


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


def train_both(shards: Path | str, out: Path, **sections: Any) -> Path:
    """Autoencoder then diffusion, 4 steps each; the model folder (OUT/diffusion/final)."""
    from train.loop import train

    config = tiny_config(shards, **sections)
    train("autoencoder", config, out)
    return train("diffusion", config, out).final


@pytest.fixture(scope="session")
def model_folder(shards, tmp_path_factory) -> Path:
    """A trained (4 + 4 steps) tiny text-conditioned model on the synthetic shards."""
    return train_both(shards, tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def demo_model(demo_out, tmp_path_factory) -> Path:
    """A tiny model trained on the demo curation run's shards: what model cards and checks read."""
    return train_both(demo_out / "shards", tmp_path_factory.mktemp("demo-model"))
