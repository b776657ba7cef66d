"""The embedding stage: images -> L2-normalised open_clip image embeddings.

``Embed`` is a Ray Data actor stage: ``__init__`` loads the model once (``clip.load``: an
open_clip name + pretrained tag or a local checkpoint, device chosen automatically; torch
seeded first, so a random-initialised model is the same in every actor and every run),
``__call__`` embeds the rows of a batch that carry image bytes, in forward passes of
``batch_size`` images, each image through the model's own eval transform.

Between stages an embedding travels in the batch as the ``embedding`` column, a
fixed-size list of float32 (null where the row has no image): Arrow keeps it columnar, so
heads read it as one (rows, dim) matrix without a copy per row, and it crosses Ray
stages unchanged (pyarrow batches in and out). ``curate.score.store``
writes it to disk as float16 .npy files.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate import records
from curate.score import clip, images

EMBEDDING = "embedding"


def embed_dim(spec: clip.ClipSpec) -> int:
    """The embedding width of ``spec``'s model, read from its open_clip config (no weights loaded)."""
    import open_clip

    clip.register_bundled_configs()
    config = open_clip.get_model_config(spec.model)
    if config is None:
        raise ValueError(f"unknown open_clip model {spec.model!r}; register its config or pick one of "
                         f"open_clip.list_models()")
    return int(config["embed_dim"])


def embedding_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def matrix(batch: pa.Table, column: str = EMBEDDING) -> tuple[list[int], np.ndarray]:
    """Rows of ``batch`` with an embedding, and those embeddings as a (rows, dim) float32 matrix."""
    rows = images.present(batch, column)
    values = batch[column].combine_chunks()
    dim = values.type.list_size
    taken = values.take(pa.array(rows, pa.int64())) if rows else values.slice(0, 0)
    return rows, taken.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(rows), dim)


def with_rows(batch: pa.Table, column: str, rows: list[int], values: np.ndarray, arrow_type: pa.DataType) -> pa.Table:
    """``batch`` with ``column`` set to ``values`` at ``rows`` (one value or vector per row), null elsewhere."""
    mask = np.ones(batch.num_rows, dtype=bool)
    mask[rows] = False
    if pa.types.is_fixed_size_list(arrow_type):
        full = np.zeros((batch.num_rows, arrow_type.list_size), dtype=np.float32)
        full[rows] = values
        array = pa.FixedSizeListArray.from_arrays(pa.array(full.reshape(-1)), arrow_type.list_size,
                                                  mask=pa.array(mask))
    else:
        full = np.zeros(batch.num_rows, dtype=arrow_type.to_pandas_dtype())
        full[rows] = values
        array = pa.array(full, arrow_type, mask=mask)
    return records.put_column(batch, column, array)


class Embed:
    """Stage: ``jpg`` bytes -> ``embedding`` (L2-normalised float32), for the pending rows that have an image.

    A row whose image does not decode fails (``images.decode``) and gets no embedding.
    """

    def __init__(self, spec: clip.ClipSpec, batch_size: int = 32):
        self.loaded = clip.load(spec)
        self.batch_size = batch_size
        self.what = f"embedder {spec.describe()}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.apply(*images.decode(batch, "score", self.what))

    def apply(self, batch: pa.Table, rows: list[int], pictures: list) -> pa.Table:
        """``embedding`` for the given rows of ``batch`` from their decoded pictures."""
        vectors = np.zeros((len(rows), self.loaded.embed_dim), dtype=np.float32)
        for start in range(0, len(rows), self.batch_size):
            vectors[start:start + self.batch_size] = self.encode(pictures[start:start + self.batch_size])
        return with_rows(batch, EMBEDDING, rows, vectors, embedding_type(self.loaded.embed_dim))

    def encode(self, pictures: list) -> np.ndarray:
        import torch

        model, device, dtype = self.loaded.model, self.loaded.device, self.loaded.dtype
        pixels = torch.stack([self.loaded.preprocess(p) for p in pictures]).to(device)
        # Mixed precision by autocast, not by casting the weights: layer norms and the final
        # normalisation stay in float32 (bf16 is ~4x faster on these CPUs, STACK.md).
        with torch.no_grad(), torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
            features = model.encode_image(pixels)
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()

