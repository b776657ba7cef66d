"""What the model stages share: image input from the ``jpg`` column, precision."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, ContextManager

from curate import pixels, records
from curate.score.images import IMAGE as IMAGE_COLUMN
from curate.score.images import failed_decode


def pending_images(rows: list[dict[str, Any]], preprocess: Callable, stage: str,
                   wanted: Callable[[dict], bool] = lambda row: True) -> tuple[list[int], list[Any]]:
    """(row indices, preprocessed tensors) of the pending rows ``wanted`` selects.

    A pending row without image bytes is a wiring error (the images were not attached
    before this stage) and raises; bytes that do not decode fail the record with
    ``decode_error``, as in every image stage (``curate.score.images.decode``).
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
            picture = pixels.rgb(data)
        except pixels.PixelError as e:
            records.finish(row, records.FAILED, pixels.DECODE_ERROR, failed_decode("caption", stage, row["key"], e),
                           stage="caption")
            continue
        tensors.append(preprocess(picture))
        indices.append(i)
    return indices, tensors


def autocast(device: str, dtype: Any) -> ContextManager:
    """The spec's precision as autocast: load() keeps fp32 weights, so fp32 needs nothing."""
    import torch

    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)
