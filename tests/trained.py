"""Shards, configs and tiny trained models made in the test, for the train and audit tests alike.

A plain module beside tests/conftest.py (pytest puts tests/ on sys.path), imported as ``trained``; the
fixtures built from it (``shards``, ``model_folder``, ``demo_model``) are in tests/conftest.py, so both
test folders share one of each per session.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from PIL import Image

from train.config import TrainConfig

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


MIXED_SIZES = [(96, 56), (56, 96), (80, 64), (64, 80), (90, 45)]  # wide, tall, wide, tall, wide


def write_mixed(folder: Path) -> Path:
    """Two shards of 12 landscape and portrait images (MIXED_SIZES in turn); every third json lacks its sizes
    (read from the header)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for s in range(2):
        with wds.TarWriter(str(folder / f"shard-{s:05d}.tar")) as sink:
            for i in range(12):
                key, (width, height) = f"mixed-{s}{i:02d}", MIXED_SIZES[(s * 12 + i) % len(MIXED_SIZES)]
                meta = {"key": key, "license": "CC0-1.0"}
                if i % 3:
                    meta |= {"stored_width": width, "stored_height": height}
                sink.write({"__key__": key, "jpg": jpeg(rng, width, height), "txt": f"caption of {key}",
                            "json": json.dumps(meta).encode()})
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


def train_both(shards: Path | str, out: Path, **sections: Any) -> Path:
    """Autoencoder then diffusion, 4 steps each; the model folder (OUT/diffusion/final)."""
    from train.loop import train

    config = tiny_config(shards, **sections)
    train("autoencoder", config, out)
    return train("diffusion", config, out).final
