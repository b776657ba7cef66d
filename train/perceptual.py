"""LPIPS-VGG (Zhang et al. 2018) built from local weight files, for the autoencoder loss.

The backbone is torchvision's VGG16 feature stack, rebuilt here so that the weights file
(a torchvision ``vgg16`` state dict, ``features.N.*`` keys) is all it needs; the linear heads
come from the LPIPS release (``lin0.model.1.weight`` .. ``lin4``). Both are opt-in: the VGG
was trained on ImageNet, which a clean-room model may not want any part of.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from train.config import PerceptualConfig

# torchvision's VGG16 ("D") feature layers: channel counts, "M" = max-pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_CHANNELS = (64, 128, 256, 512, 512)
_SHIFT = (-0.030, -0.088, -0.188)  # LPIPS' input scaling, for inputs in [-1, 1]
_SCALE = (0.458, 0.448, 0.450)


def vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=False)]
            channels = item
    return nn.Sequential(*layers)


def _load(path: str) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: perceptual loss weights not found (autoencoder.perceptual)")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


class LPIPS(nn.Module):
    def __init__(self, config: PerceptualConfig):
        super().__init__()
        self.features = vgg16_features()
        vgg = {k.removeprefix("features."): v for k, v in _load(config.vgg16).items() if k.startswith("features.")}
        try:
            self.features.load_state_dict(vgg)
        except RuntimeError as e:
            raise ValueError(f"{config.vgg16}: not a torchvision vgg16 state dict ({e})") from None
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        heads = {int(m.group(1)): v for k, v in _load(config.lpips).items()
                 if (m := re.fullmatch(r"lin(\d)\.(?:model\.\d+\.)?weight", k))}
        if sorted(heads) != list(range(len(_CHANNELS))):
            raise ValueError(f"{config.lpips}: expected LPIPS heads lin0..lin4, found {sorted(heads)}")
        for index, head in enumerate(self.heads):
            head.weight.data.copy_(heads[index])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        x = (x - self.shift) / self.scale
        for index, layer in enumerate(self.features[: _TAPS[-1] + 1]):
            x = layer(x)
            if index in _TAPS:
                taps.append(F.normalize(x, dim=1, eps=1e-10))
        return taps

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-sample perceptual distance between images in [-1, 1]."""
        return sum(head((ta - tb) ** 2).mean(dim=(1, 2, 3))
                   for head, ta, tb in zip(self.heads, self._taps(a), self._taps(b)))
