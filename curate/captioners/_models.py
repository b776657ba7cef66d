"""What the model stages share: image input from the ``jpg`` column, precision."""

from __future__ import annotations

import io
from contextlib import nullcontext
from typing import Any, Callable, ContextManager

from PIL import Image, UnidentifiedImageError

from curate import records
from curate.score.images import IMAGE as IMAGE_COLUMN


def pending_images(rows: list[dict[str, Any]], preprocess: Callable, stage: str,
                   wanted: Callable[[dict], bool] = lambda row: True) -> tuple[list[int], list[Any]]:
    """(row indices, preprocessed tensors) of the pending rows ``wanted`` selects.

    A pending row without image bytes is a wiring error (the images were not attached
    before this stage) and raises; bytes that do not decode fail the record with
    ``decode_error``, like any other image that cannot be read.
    """
    indices, tensors = [], []
    for i, row in enumerate(rows):
        if row["status"] != records.PENDING or not wanted(row):
            continue
        data = row.get(IMAGE_COLUMN)
        if data is None:
            raise ValueError(f"{stage}: record {row['key']} has no image bytes in column {IMAGE_COLUMN!r}; "
                             f"attach the fetched images before this stage")
        try:
            with Image.open(io.BytesIO(data)) as image:
                tensors.append(preprocess(image.convert("RGB")))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            records.finish(row, records.FAILED, "decode_error", f"{stage}: {type(e).__name__}: {e}")
            continue
        indices.append(i)
    return indices, tensors


def autocast(device: str, dtype: Any) -> ContextManager:
    """The spec's precision as autocast: load() keeps fp32 weights, so fp32 needs nothing."""
    import torch

    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)
