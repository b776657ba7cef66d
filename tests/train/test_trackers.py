"""Training logs a person reads: scalars and validation grids in tensorboard, and in an offline wandb run."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest
from PIL import Image

from train.loop import train

from trained import tiny_config


def tracked_config(shards: Path, autoencoder: Path, log_with: str):
    return tiny_config(shards, accelerate={"mixed_precision": "no", "log_with": log_with},
                       diffusion=tiny_config(shards).diffusion.model_dump() | {
                           "autoencoder": str(autoencoder),
                           "loop": {"steps": 4, "checkpoint_every": 4, "validate_every": 2, "log_every": 2}})


def test_validation_grids_are_tensorboard_images(shards: Path, random_autoencoder, tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train("diffusion", tracked_config(shards, random_autoencoder(0), "tensorboard"), tmp_path)
    job = tmp_path / "diffusion"
    events = EventAccumulator(str(job / "logs" / "diffusion")).Reload()
    assert "validation/samples" in events.Tags()["images"]
    images = events.Images("validation/samples")
    assert [image.step for image in images] == [2, 4]
    logged = Image.open(io.BytesIO(images[-1].encoded_image_string))
    assert logged.size == Image.open(job / "samples" / "step-00000004.png").size
    assert [s.step for s in events.Scalars("train/loss")] == [2, 4]


def wandb_records(run_file: Path) -> list:
    """The records of a wandb run file (the LevelDB log format: 32 KiB blocks of CRC, length, type, data)."""
    from wandb.proto import wandb_internal_pb2

    data, block = run_file.read_bytes(), 32768
    assert data.startswith(b":W&B")
    position, pending, records = 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last fragment of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_an_offline_wandb_run_keeps_the_scalars_and_the_grid(shards: Path, random_autoencoder, tmp_path: Path,
                                                            monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    train("diffusion", tracked_config(shards, random_autoencoder(0), "wandb"), tmp_path)
    (run,) = (tmp_path / "diffusion" / "logs" / "wandb").glob("offline-run-*")
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
               for record in wandb_records(next(run.glob("run-*.wandb"))) if record.HasField("history")]
    losses = {row["_step"]: row["train/loss"] for row in history if "train/loss" in row}
    assert sorted(losses) == [2, 4] and all(isinstance(v, float) for v in losses.values())
    grids = [row for row in history if "validation/samples/filenames" in row]
    assert [row["_step"] for row in grids] == [2, 4]
    grid = Image.open(run / "files" / grids[-1]["validation/samples/filenames"][0])
    assert grid.size == Image.open(tmp_path / "diffusion" / "samples" / "step-00000004.png").size
