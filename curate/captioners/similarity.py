"""Image-text similarity filter: cosine(CLIP image embedding, CLIP text embedding of the chosen caption).

LAION-400M kept an image-alt-text pair when this cosine, under OpenAI's ViT-B/32, was at
least 0.28. Here it scores the caption the pipeline chose for KEY.txt, so a record whose
caption does not describe its image is rejected with ``low_clip_similarity``; the score
of every scored record is kept in ``caption_clip_similarity``, and the rejection's detail
names the number, the threshold and the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curate import records, stages
from curate.captioners import text as captext
from curate.captioners._models import autocast, pending_images
from curate.captioners.config import SimilarityFilter
from curate.score import clip, store

SCORE_COLUMN = "caption_clip_similarity"
REASON = "low_clip_similarity"
STAGE = "caption"
stages.declare(STAGE, rejected={REASON: "the chosen caption does not describe the image well enough"})


def has_caption(row: dict[str, Any]) -> bool:
    """A record without a caption has nothing to compare: it is left as it is."""
    return bool(row["caption"])


class ClipSimilarity:
    """Stage (a Ray actor: it loads the model once): pending captioned records -> scored, low ones rejected.

    With ``stored`` (the run's embedding store, when scoring embedded the images with this same
    model) the image side is read from the store by each record's ``embedding_file`` and
    ``embedding_row``: only the captions are encoded, and no image is decoded again.
    """

    def __init__(self, settings: SimilarityFilter, stored: Path | None = None):
        self.settings, self.stored = settings, stored
        self.loaded = clip.load(settings.model)
        self.name = settings.model.describe()

    def image_embeddings(self, images: Any) -> Any:
        import torch
        import torch.nn.functional as F

        with torch.no_grad(), autocast(self.loaded.device, self.loaded.dtype):
            return F.normalize(self.loaded.model.encode_image(images.to(self.loaded.device)).float(), dim=-1)

    def scores(self, image: Any, captions: list[str]) -> list[float]:
        """Cosine similarity of each normalised image embedding with its caption."""
        import torch
        import torch.nn.functional as F

        tokens = self.loaded.tokenizer(captions).to(self.loaded.device)
        with torch.no_grad(), autocast(self.loaded.device, self.loaded.dtype):
            text = F.normalize(self.loaded.model.encode_text(tokens).float(), dim=-1)
        return (image.to(text.device).float() * text).sum(dim=-1).tolist()

    def verdict(self, row: dict[str, Any], score: float) -> None:
        row[SCORE_COLUMN] = score
        if score < self.settings.threshold:
            records.finish(row, records.REJECTED, REASON,
                           f"clip similarity {score:.4f} < {self.settings.threshold} ({self.name}) "
                           f"for the {row['caption_origin']} caption")

    def stored_embeddings(self, rows: list[dict[str, Any]], indices: list[int]) -> Any:
        import torch

        missing = [rows[i]["key"] for i in indices if rows[i].get(store.FILE) is None]
        if missing:
            raise ValueError(f"caption similarity {self.name}: record {missing[0]} has no stored embedding "
                             f"({store.FILE} is empty) although scoring embedded with this model")
        found = store.read_located(self.stored, [rows[i][store.FILE] for i in indices],
                                   [rows[i][store.ROW] for i in indices])
        return torch.from_numpy(found.astype(np.float32))

    def __call__(self, table: pa.Table) -> pa.Table:
        import torch

        table = records.conform(table)
        rows = table.to_pylist()
        if self.stored is not None:
            indices = [i for i, row in enumerate(rows) if row["status"] == records.PENDING and has_caption(row)]
            embedded = self.stored_embeddings(rows, indices)
        else:
            indices, tensors = pending_images(rows, self.loaded.preprocess, f"caption similarity {self.name}",
                                              wanted=has_caption)
        size = self.settings.batch_size
        for start in range(0, len(indices), size):
            chunk = indices[start:start + size]
            image = (embedded[start:start + size] if self.stored is not None
                     else self.image_embeddings(torch.stack(tensors[start:start + size])))
            for i, score in zip(chunk, self.scores(image, [rows[i]["caption"] for i in chunk])):
                self.verdict(rows[i], score)
        return pa.Table.from_pylist(rows, schema=captext.with_column(table.schema, SCORE_COLUMN, pa.float64()))
