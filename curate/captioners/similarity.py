"""Image-text similarity filter: cosine(CLIP image embedding, CLIP text embedding of the chosen caption).

LAION-400M kept an image-alt-text pair when this cosine, under OpenAI's ViT-B/32, was at
least 0.28. Here it scores the caption the pipeline chose for KEY.txt, so a record whose
caption does not describe its image is rejected with ``low_clip_similarity``; the score
of every scored record is kept in ``caption_clip_similarity``, and the rejection's detail
names the number, the threshold and the model.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curate import records, stages
from curate.captioners import text as captext
from curate.captioners._models import autocast, pending_images
from curate.captioners.config import SimilarityFilter
from curate.score import clip

SCORE_COLUMN = "caption_clip_similarity"
REASON = "low_clip_similarity"
STAGE = "caption"
stages.declare(STAGE, rejected={REASON: "the chosen caption does not describe the image well enough"})


class ClipSimilarity:
    """Stage (a Ray actor: it loads the model once): pending captioned records -> scored, low ones rejected."""

    def __init__(self, settings: SimilarityFilter):
        self.settings = settings
        self.loaded = clip.load(settings.model)
        self.name = settings.model.describe()

    def scores(self, images: Any, captions: list[str]) -> list[float]:
        """Cosine similarity of each preprocessed image with its caption."""
        import torch
        import torch.nn.functional as F

        tokens = self.loaded.tokenizer(captions).to(self.loaded.device)
        with torch.no_grad(), autocast(self.loaded.device, self.loaded.dtype):
            image = F.normalize(self.loaded.model.encode_image(images.to(self.loaded.device)).float(), dim=-1)
            text = F.normalize(self.loaded.model.encode_text(tokens).float(), dim=-1)
        return (image * text).sum(dim=-1).tolist()

    def verdict(self, row: dict[str, Any], score: float) -> None:
        row[SCORE_COLUMN] = score
        if score < self.settings.threshold:
            records.finish(row, records.REJECTED, REASON,
                           f"clip similarity {score:.4f} < {self.settings.threshold} ({self.name}) "
                           f"for the {row['caption_origin']} caption")

    def __call__(self, table: pa.Table) -> pa.Table:
        import torch

        table = records.conform(table)
        rows = table.to_pylist()
        # A record without a caption has nothing to compare: it is left as it is.
        indices, tensors = pending_images(rows, self.loaded.preprocess, f"caption similarity {self.name}",
                                          wanted=lambda row: bool(row["caption"]))
        size = self.settings.batch_size
        for start in range(0, len(indices), size):
            chunk = indices[start:start + size]
            found = self.scores(torch.stack(tensors[start:start + size]), [rows[i]["caption"] for i in chunk])
            for i, score in zip(chunk, found):
                self.verdict(rows[i], score)
        return pa.Table.from_pylist(rows, schema=captext.with_column(table.schema, SCORE_COLUMN, pa.float64()))
