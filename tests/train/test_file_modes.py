"""Everything training, export and sampling write is readable by the other users of a shared disk.

The tests run under umask 022 (tests/conftest.py), so every file should be 0644 and every folder 0755.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from train import export, generate
from train.generate import SampleSettings, load


@pytest.fixture(scope="module")
def written(model_folder: Path, tmp_path_factory) -> list[Path]:
    """The training run folder behind `model_folder`, and an export and samples made from it."""
    out = tmp_path_factory.mktemp("modes")
    model = load(model_folder)
    export.save_pipeline(model, out / "sd")
    export.write_single_file(model, out / "sd.safetensors")
    generate.sample_to_folder(model, ["a red square"], SampleSettings(steps=2), out / "samples")
    return [model_folder.parent.parent, out]


def modes(roots: list[Path]) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for root in roots for p in root.rglob("*")}


def test_files_are_0644_and_folders_0755(written: list[Path]):
    found = modes(written)
    folders = {p.relative_to(root).as_posix() for root in written for p in root.rglob("*") if p.is_dir()}
    assert {path: oct(mode) for path, mode in found.items() if mode != (0o755 if path in folders else 0o644)} == {}
    # The writers that left 0600 files: safetensors (its own temp file), tempfile temp files renamed into place.
    for path in ("diffusion/checkpoints/step-00000004/model.safetensors", "diffusion/checkpoints/step-00000004/"
                 "meta.json", "diffusion/final/unet/diffusion_pytorch_model.safetensors", "diffusion/final/config.yaml",
                 "autoencoder/samples/step-00000004.png", "sd/unet/diffusion_pytorch_model.safetensors",
                 "sd.safetensors", "samples/grid.png", "samples/00000-0.png"):
        assert found[path] == 0o644, path
    assert found["diffusion/final"] == found["sd"] == 0o755


def test_nothing_temporary_is_left(written: list[Path]):
    assert [p for p in modes(written) if p.endswith((".tmp", ".partial"))] == []
