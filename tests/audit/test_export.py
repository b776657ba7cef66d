"""``cleanroom export``: train.export's formats with the model card and the model license beside them.

What the exported files hold for diffusers, transformers and LDM readers is tested in tests/train/test_export.py;
here, what the command adds: its options, the card and license, and the error when there is no catalog.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import pytest

from audit import card, export


def run_export(argv: list[str]) -> dict:
    """`cleanroom export ...` (the command `register` adds); its printed JSON summary."""
    parser = argparse.ArgumentParser(prog="cleanroom")
    export.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", *argv])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert args.handler(args) == 0
    return json.loads(printed.getvalue())


def test_export_command_writes_the_pipeline_folder_and_the_single_file(model_folder: Path, tmp_path: Path):
    summary = run_export([str(model_folder), "--out", str(tmp_path / "sd"), "--no-card"])
    folder = Path(summary["pipeline"])
    assert Path(summary["single_file"]) == folder / "test.safetensors" and Path(summary["single_file"]).is_file()
    assert summary["sampler"] == "DPM++ 2M Karras" and summary["text_encoder_layers"] == 1  # penultimate of 2
    assert (folder / "model_index.json").is_file()
    assert not (folder / card.CARD).exists() and not (folder / card.LICENSE_FILE).exists()


def test_sampler_and_single_file_path_options(model_folder: Path, tmp_path: Path):
    summary = run_export([str(model_folder), "--out", str(tmp_path / "sd"), "--sampler", "ddim", "--no-card",
                          "--single-file", str(tmp_path / "ckpt" / "model.safetensors")])
    assert summary["sampler"] == "DDIM"  # no Karras sigmas for DDIM: not asked for, not an error
    assert (tmp_path / "ckpt" / "model.safetensors").is_file() and not (tmp_path / "sd" / "test.safetensors").exists()
    scheduler = json.loads((tmp_path / "sd" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "DDIMScheduler" and scheduler["beta_schedule"] == "scaled_linear"
    assert scheduler["steps_offset"] == 1  # what StableDiffusionPipeline would impose anyway


def test_export_ships_the_model_card_and_license(demo_model: Path, tmp_path: Path):
    summary = run_export([str(demo_model), "--out", str(tmp_path / "sd")])
    folder = Path(summary["pipeline"])
    assert (folder / card.LICENSE_FILE).read_text() == card.MODEL_LICENSE.read_text()
    assert (folder / card.CARD).read_text() == card.render(demo_model)


def test_export_without_a_curation_run_needs_no_card_said(model_folder: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="not inside a curation run folder"):
        export.export(model_folder, tmp_path / "sd")
    assert not (tmp_path / "sd").exists() and not (tmp_path / "sd.partial").exists()
