"""A multi-resolution schedule: phases with their own size, batch and rate, resumed inside a phase."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from curate.config import ConfigError, validate
from train.config import TrainConfig

from trained import config_dict, tiny_config

PHASES = [{"steps": 3, "resolution": 32}, {"steps": 3, "resolution": 48, "batch_size": 2, "lr": 5e-4}]


def test_phases_must_add_up_to_the_run(shards: Path):
    config = config_dict(shards)
    config["diffusion"]["phases"] = PHASES  # 6 steps; the run has 4
    with pytest.raises(ConfigError, match="diffusion.phases: their steps add up to 6 but diffusion.loop.steps is 4"):
        validate(TrainConfig, config, "train.yaml")


def test_a_two_phase_schedule_resumes_exactly_inside_its_second_phase(shards: Path, tmp_path: Path,
                                                                      straight_and_resumed, random_autoencoder):
    config = tiny_config(shards, diffusion=tiny_config(shards).diffusion.model_dump() | {
        "autoencoder": str(random_autoencoder(0)), "phases": PHASES,
        "loop": {"steps": 6, "checkpoint_every": 2, "keep_checkpoints": 5, "validate_every": 100, "log_every": 1}})
    # Killed after step 5, in phase 2; its checkpoint is step 4.
    summary, straight, resumed = straight_and_resumed(config, tmp_path, stop_at=5)
    assert [shape for _, shape in straight] == [(4, 3, 32, 32)] * 3 + [(2, 3, 48, 48)] * 3
    assert summary.last_logs["lr"] == pytest.approx(5e-4)
    samples = tmp_path / "straight" / "diffusion" / "samples"
    first, second = (Image.open(samples / f"step-0000000{step}.png") for step in (1, 4))  # each phase's first grid
    assert second.height > first.height  # the grid is a fixed width: 48 px samples make it taller
    record = json.loads((tmp_path / "straight" / "diffusion" / "final" / "training.json").read_text())
    assert record["samples_seen"] == 3 * 4 + 3 * 2
    assert resumed == straight[4:]
