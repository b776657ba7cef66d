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
    """Stage: add ``jpg`` (bytes) to pending records, null elsewhere, read where each record's image is stored."""

    def __init__(self, fetch_root: Path):
        self.fetch_root = Path(fetch_root)

    def __call__(self, batch: pa.Table) -> pa.Table:
        batch = records.conform(batch)
        rows = batch.select(["key", "status", "image_file", "image_row"]).to_pylist()
        images = fetch.read_located(self.fetch_root, [r for r in rows if r["status"] == records.PENDING])
        column = pa.array([images.get(r["key"]) for r in rows], pa.binary())
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
    """The detail of a decode_error after fetch: the stage and step that read the image, the key, the error."""
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
    return Decoded(_failed(batch, failures, stage), rows, pictures)


def _failed(batch: pa.Table, failures: dict[int, str], stage: str) -> pa.Table:
    if not failures:
        return batch
    batch = records.conform(batch)
    columns = {c: batch[c].to_pylist() for c in ("status", "reason", "detail", "stage")}
    for i, detail in failures.items():
        for name, value in zip(columns, (records.FAILED, pixels.DECODE_ERROR, detail, stage)):
            columns[name][i] = value
    for name, values in columns.items():
        batch = records.put_column(batch, name, pa.array(values, pa.string()))
    return batch


def present(batch: pa.Table, column: str = IMAGE) -> list[int]:
    """Row positions of ``batch`` whose ``column`` is not null."""
    return [i for i, valid in enumerate(pc.is_valid(batch[column]).to_pylist()) if valid]
