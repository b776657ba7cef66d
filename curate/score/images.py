"""Image bytes for the image models: attached to pending records, decoded, dropped again.

Records do not carry their image; img2dataset keeps it in the fetch folder of its source.
``AttachImages`` adds a ``jpg`` column (the stored, resized JPEG) to the pending rows of a
batch so the image stages (embedder, watermark detector, perceptual hash) can read it;
``drop_images`` removes it before the batch is written, so images never travel further.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curate import fetch, records

IMAGE = "jpg"


class AttachImages:
    """Stage: add ``jpg`` (bytes) to pending records, null elsewhere; reads ``<fetch_root>/<source>``."""

    def __init__(self, fetch_root: Path):
        self.fetch_root = Path(fetch_root)

    def __call__(self, batch: pa.Table) -> pa.Table:
        batch = records.conform(batch)
        pending = pc.equal(batch["status"], records.PENDING).to_pylist()
        keys, sources = batch["key"].to_pylist(), batch["source"].to_pylist()
        images: dict[str, bytes] = {}
        for source in sorted({s for s, p in zip(sources, pending) if p}):
            wanted = [k for k, s, p in zip(keys, sources, pending) if p and s == source]
            images.update(fetch.read_images(self.fetch_root / source, wanted))
        column = pa.array([images.get(k) for k in keys], pa.binary())
        return batch.append_column(IMAGE, column)


def drop_images(batch: pa.Table) -> pa.Table:
    return batch.drop_columns([IMAGE])


def rgb(data: bytes, key: str):
    """Decode one stored image to an RGB PIL image; the error names the record."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as e:  # PIL raises several types for bad bytes
        raise ValueError(f"record {key}: cannot decode its stored image ({e})") from e
    return image.convert("RGB")


def present(batch: pa.Table, column: str = IMAGE) -> list[int]:
    """Row positions of ``batch`` whose ``column`` is not null."""
    return [i for i, valid in enumerate(pc.is_valid(batch[column]).to_pylist()) if valid]
