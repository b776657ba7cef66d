"""The scoring stage's image models in one actor, so that each image is decoded once.

Decoding is the CPU cost of every image model that a GPU does not take: a 1024 px JPEG costs
about as much to decode as the tiny models cost to run. The CLIP embedder, the watermark
detector and the perceptual hash each read the same RGB picture here, each applying its own
transform to it (CLIP's resize and centre crop, the detector's 256x256 resize, pHash's 32x32
greyscale), so every score is what that model gives on its own.
"""

from __future__ import annotations

import pyarrow as pa

from curate import dedup
from curate.score import embed, images, watermark
from curate.score.filter import ScoringConfig


class ScoreImages:
    """Stage (a Ray actor: it loads its models once): pending images -> ``embedding``, ``pwatermark``, ``phash``.

    ``pwatermark`` only when the scoring config has a watermark detector. A row whose image
    does not decode fails once, with one ``decode_error`` naming every model of the stage.
    """

    def __init__(self, settings: ScoringConfig):
        self.embedder = embed.Embed(settings.clip, settings.batch_size)
        self.detector = watermark.Watermark(settings.watermark) if settings.watermark else None
        self.what = ", ".join([self.embedder.what, *([self.detector.what] if self.detector else []),
                               "perceptual hash"])

    def __call__(self, batch: pa.Table) -> pa.Table:
        batch, rows, pictures = images.decode(batch, "score", self.what)
        batch = self.embedder.apply(batch, rows, pictures)
        if self.detector is not None:
            batch = self.detector.apply(batch, rows, pictures)
        return dedup.put_phash(batch, rows, pictures)
