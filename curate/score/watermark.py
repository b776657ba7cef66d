"""LAION-5B watermark detector: image -> pwatermark, the probability that it carries a watermark.

Weight format (LAION-5B-WatermarkDetection, ``models/watermark_model_v1.pt``): the full
state dict of ``timm.create_model('efficientnet_b3a', num_classes=2)`` whose ``classifier`` is
replaced by Linear(1536, 625), ReLU, Dropout(0.3), Linear(625, 256), ReLU, Linear(256, 2)
(keys ``classifier.{0,3,5}.{weight,bias}``). Input: the image resized to 256x256 (no crop),
ImageNet mean/std. Output: softmax over the two logits; index 0 is "watermark" (LAION's
example reads ``watermark_prob, clear_prob = softmax``), so pwatermark = softmax[:, 0].
Stable Diffusion v1 kept pwatermark < 0.5.

timm 1.0 maps the old name ``efficientnet_b3a`` to ``efficientnet_b3`` with a warning: the
architecture and state dict keys are the same, so we build ``efficientnet_b3`` directly.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from curate.score import clip, embed, images, weights

SCORE = "pwatermark"
WHAT = "LAION-5B watermark detector (efficientnet_b3 + 1536-625-256-2 head)"
SIZE = 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WatermarkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: str = Field(description="A local watermark_model_v1.pt (LAION-5B's detector).")
    max_pwatermark: float | None = Field(None, ge=0, le=1, description=(
        "Reject at or above this p(watermark); none records the score only."))
    batch_size: int = Field(16, ge=1, description="Images per forward pass.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when there is a GPU.")

    def describe(self) -> str:
        return f"laion-watermark-efficientnet_b3:{self.weights}"


def build():
    """The detector's architecture, random-initialised, in eval mode."""
    import timm
    from torch import nn

    model = timm.create_model("efficientnet_b3", pretrained=False, num_classes=2)
    model.classifier = nn.Sequential(
        nn.Linear(1536, 625), nn.ReLU(), nn.Dropout(p=0.3), nn.Linear(625, 256), nn.ReLU(), nn.Linear(256, 2))
    return model.eval()


def load(path: str):
    state = weights.read_state_dict(path, WHAT)
    return weights.load_strict(build(), state, path, WHAT).requires_grad_(False)


def transform():
    from torchvision import transforms as T

    return T.Compose([T.Resize((SIZE, SIZE)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def save_random(path, seed: int = 0) -> None:
    """A random-initialised detector in the real format (tests, the offline demo): its scores mean nothing."""
    import torch

    torch.manual_seed(seed)
    torch.save(build().state_dict(), path)


class Watermark:
    """Stage: ``jpg`` bytes -> ``pwatermark`` (float32) for the pending rows that have an image.

    A row whose image does not decode fails (``images.decode``) and gets no score.
    """

    def __init__(self, config: WatermarkConfig):
        self.device = clip.pick_device(config.device)
        self.model = load(config.weights).to(self.device)
        self.transform = transform()
        self.batch_size = config.batch_size
        self.what = f"watermark detector {config.describe()}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.apply(*images.decode(batch, "score", self.what))

    def apply(self, batch: pa.Table, rows: list[int], pictures: list) -> pa.Table:
        """``pwatermark`` for the given rows of ``batch`` from their decoded pictures."""
        scores = np.zeros(len(rows), dtype=np.float32)
        for start in range(0, len(rows), self.batch_size):
            scores[start:start + self.batch_size] = self.pwatermark(pictures[start:start + self.batch_size])
        return embed.with_rows(batch, SCORE, rows, scores, pa.float32())

    def pwatermark(self, pictures: list) -> np.ndarray:
        import torch

        pixels = torch.stack([self.transform(p) for p in pictures]).to(self.device)
        with torch.no_grad():
            return torch.softmax(self.model(pixels), dim=1)[:, 0].cpu().numpy()
