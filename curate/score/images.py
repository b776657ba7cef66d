"""Image bytes for the image models: attached to pending records, decoded, dropped again.

Records do not carry their image; img2dataset keeps it in the fetch folder of its source.
``AttachImages`` adds a ``jpg`` column (the stored, resized JPEG) to the pending rows of a
batch so the image stages (embedder, watermark detector, perceptual hash, captioners) can
read it, each through ``decode``; ``drop_images`` removes it before the batch is written,
so images never travel further.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from curate import fetch, pixels, records

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


class Decoded(NamedTuple):
    """``batch`` with the fates of the rows whose image did not decode, and the rows that did."""

    batch: pa.Table
    rows: list[int]
    pictures: list[Any]  # RGB PIL images, one per row of ``rows``


def rgb(data: bytes, key: str):
    """Decode one image to RGB where a bad one is an error, not a record's fate; the error names ``key``."""
    try:
        return pixels.rgb(data)
    except pixels.PixelError as e:
        raise ValueError(f"record {key}: cannot decode its stored image ({e})") from e


def failed_decode(stage: str, what: str, key: str, error: pixels.PixelError) -> str:
    """The detail of a decode_error after fetch; ``stage`` (one of stats.STAGES) first, so the failure counts there."""
    return f"{stage}: {what}: record {key}: cannot decode its stored image ({error})"


def decode(batch: pa.Table, stage: str, what: str) -> Decoded:
    """The pending rows of ``batch`` that carry an image, decoded to RGB.

    Every image stage decodes through here, so all follow one error policy: an image that
    does not decode fails its record with ``decode_error`` (the detail names ``stage``, the
    model or step ``what``, the key and the decoder's message) and the run goes on.
    """
    keys, data, status = (batch[c].to_pylist() for c in ("key", IMAGE, "status"))
    rows, pictures, failures = [], [], {}
    for i in present(batch):
        if status[i] != records.PENDING:
            continue
        try:
            pictures.append(pixels.rgb(data[i]))
        except pixels.PixelError as e:
            failures[i] = failed_decode(stage, what, keys[i], e)
            continue
        rows.append(i)
    return Decoded(_failed(batch, failures), rows, pictures)


def _failed(batch: pa.Table, failures: dict[int, str]) -> pa.Table:
    if not failures:
        return batch
    columns = {c: batch[c].to_pylist() for c in ("status", "reason", "detail")}
    for i, detail in failures.items():
        columns["status"][i], columns["reason"][i], columns["detail"][i] = records.FAILED, pixels.DECODE_ERROR, detail
    for name, values in columns.items():
        batch = records.put_column(batch, name, pa.array(values, pa.string()))
    return batch


def present(batch: pa.Table, column: str = IMAGE) -> list[int]:
    """Row positions of ``batch`` whose ``column`` is not null."""
    return [i for i, valid in enumerate(pc.is_valid(batch[column]).to_pylist()) if valid]
