"""Atomic writes: whole or nothing, no temp left behind, and the modes a plain open() gives."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from curate.io import atomic_folder, atomic_path, partial_folder, write_text_atomic


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_file_gets_the_mode_of_a_plain_open(tmp_path, umask_022):
    write_text_atomic("hello", tmp_path / "a" / "note.txt")
    with atomic_path(tmp_path / "w.safetensors") as tmp:
        save_file({"x": torch.zeros(2)}, tmp)  # safetensors renames its own 0600 temp file over tmp
    assert mode(tmp_path / "a" / "note.txt") == mode(tmp_path / "w.safetensors") == 0o644
    assert sorted(os.listdir(tmp_path)) == ["a", "w.safetensors"]  # no temp file left


def test_the_mode_follows_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        write_text_atomic("x", tmp_path / "private.txt")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "private.txt") == 0o640


def test_an_exception_leaves_neither_target_nor_temp_file(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="midway"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("midway")
    assert list(tmp_path.iterdir()) == []


def test_an_exception_keeps_the_previous_file(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic("old", target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise RuntimeError
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_a_folder_is_published_whole_with_readable_modes(tmp_path, umask_022):
    dest = tmp_path / "model"
    with atomic_folder(dest) as partial:
        assert partial == partial_folder(dest) and not dest.exists()
        (partial / "unet").mkdir(mode=0o700)
        save_file({"x": torch.zeros(2)}, partial / "unet" / "weights.safetensors")
        (partial / "config.json").write_text("{}")
    assert mode(dest) == mode(dest / "unet") == 0o755
    assert mode(dest / "unet" / "weights.safetensors") == mode(dest / "config.json") == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_folder_replaces_an_older_one_and_a_failure_leaves_the_old_one(tmp_path):
    dest = tmp_path / "final"
    for text in ("first", "second"):
        with atomic_folder(dest) as partial:
            (partial / "step.txt").write_text(text)
    assert (dest / "step.txt").read_text() == "second"
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(dest) as partial:
            (partial / "step.txt").write_text("third")
            raise KeyboardInterrupt
    assert (dest / "step.txt").read_text() == "second" and [p.name for p in tmp_path.iterdir()] == ["final"]
