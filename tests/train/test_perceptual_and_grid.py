from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from train import sample
from train.perceptual import LPIPS


def test_lpips_is_zero_for_equal_images_and_grows_with_difference(lpips_files):
    lpips = LPIPS(lpips_files)
    a = torch.rand(2, 3, 32, 32) * 2 - 1
    near, far = (a + 0.05 * torch.randn_like(a)).clamp(-1, 1), torch.rand_like(a) * 2 - 1
    assert lpips(a, a).abs().max() < 1e-6
    assert (lpips(a, near) < lpips(a, far)).all()
    b = far.clone().requires_grad_(True)
    lpips(a, b).sum().backward()
    assert b.grad.abs().sum() > 0 and not any(p.requires_grad for p in lpips.parameters())


def test_lpips_files_are_checked(lpips_files, tmp_path: Path):
    torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, tmp_path / "heads.pth")
    with pytest.raises(ValueError, match="expected LPIPS heads lin0..lin4"):
        LPIPS(lpips_files.model_copy(update={"lpips": str(tmp_path / "heads.pth")}))
    with pytest.raises(FileNotFoundError, match="autoencoder.perceptual"):
        LPIPS(lpips_files.model_copy(update={"vgg16": str(tmp_path / "missing.pth")}))


def test_grid_is_saved_with_its_labels(tmp_path: Path):
    images = sample.to_images(torch.linspace(-1, 1, 5 * 3 * 16 * 16).view(5, 3, 16, 16))
    labels = ["a very long prompt " * 5, "", "key-" + "x" * 60, "d", "e"]
    path = sample.save_grid(images, labels, tmp_path / "samples" / "step-00000007.png", step=7, columns=2)
    grid = Image.open(path)
    assert grid.width == 2 * 128 and grid.height == 3 * (16 + 40)
    assert json.loads(path.with_suffix(".json").read_text()) == {"step": 7, "labels": labels}
    assert not list(path.parent.glob("*.tmp"))
