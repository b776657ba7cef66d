"""Fixtures only the trainer's tests use; the shards and tiny models they share with tests/audit are in
tests/conftest.py (built with tests/trained.py)."""

from __future__ import annotations

import pytest
import torch

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
