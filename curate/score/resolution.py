"""Resolution filter on the original image size (before any resize for the shard).

Where a source's metadata states the original's size (the adapters put it in the record's
``meta`` as ``source_width``/``source_height``: Commons' imageinfo, Flickr's ``o_width``, AIC's
thumbnail, Cleveland's rendition), ``before_fetch`` judges it by the same rule before the image
is requested; what it rejects is never downloaded. Records without a stated size are judged
from the downloaded file, as every record is after the fetch.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from curate import records, stages

STATED_SIZE = ("source_width", "source_height")  # keys of a record's ``meta``: the size its source states
BATCH_ROWS = 10_000  # candidates judged at a time: a source's list may hold millions
FATES = ["key", "status", "reason", "detail", "stage"]


class ResolutionFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_side: int = Field(default=256, ge=1, description="Reject originals whose shorter side is below this.")
    max_aspect_ratio: float = Field(default=3.0, ge=1.0, description=(
        "Reject originals whose long side is more than this many times the short side."))


@stages.register
class Resolution(stages.Filter):
    """Reject pending records whose original short side or aspect ratio is out of bounds."""

    name = "resolution"
    reasons = {"min_side": "the original's shorter side is below min_side",
               "max_aspect_ratio": "the original is more elongated than max_aspect_ratio"}
    Config = ResolutionFilter

    def decide(self, row: dict[str, Any]) -> tuple[str, str] | None:
        return self.judge(row["original_width"], row["original_height"])

    def judge(self, width: int, height: int, source: str = "") -> tuple[str, str] | None:
        """The rule, on a size; ``source`` says where the size came from when not from the file."""
        short, long = sorted((width, height))
        size = f"original {width}x{height}{source}"
        if short < self.config.min_side:
            return "min_side", f"{size}: short side {short} < min_side {self.config.min_side}"
        if long / short > self.config.max_aspect_ratio:
            return "max_aspect_ratio", f"{size}: aspect ratio {long / short:.2f} > {self.config.max_aspect_ratio}"
        return None

    def describe(self) -> str:
        return (f"Resolution: shorter side at least {self.config.min_side} px, aspect ratio at most "
                f"{self.config.max_aspect_ratio}.")


class _StatedResolution(Resolution):
    """The resolution rule applied to the size the record's metadata states; no stated size: no verdict."""

    def decide(self, row: dict[str, Any]) -> tuple[str, str] | None:
        size = stated_size(row["meta"])
        return None if size is None else self.judge(*size, " (size from the source metadata)")


def stated_size(meta: str | None) -> tuple[int, int] | None:
    """The (width, height) a record's ``meta`` JSON states, when both are positive whole numbers."""
    stated = json.loads(meta) if meta else {}
    size = tuple(stated.get(name) for name in STATED_SIZE) if isinstance(stated, dict) else ()
    if len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        return size
    return None


def before_fetch(candidates: pa.Table, filters: Iterable[Any]) -> tuple[pa.Table, pa.Table]:
    """Candidates (``key``, ``url``, ``meta``, ...) -> (those left to download, with the columns they came with;
    the fates of the ones the pipeline's resolution filter rejects from their stated size: key, status, reason,
    detail, stage)."""
    judges = [_StatedResolution(f.config, strict=f.strict) for f in filters if isinstance(f, Resolution)]
    if not judges or candidates.num_rows == 0:
        return candidates, records.SCHEMA.empty_table().select(FATES)
    left, fates = [], []
    for batch in candidates.to_batches(max_chunksize=BATCH_ROWS):
        given = pa.Table.from_batches([batch])
        table = records.conform(given.select(["key", "url", "meta"])
                                .append_column("status", pa.array([records.PENDING] * batch.num_rows, pa.string()))
                                .append_column("reason", pa.array([""] * batch.num_rows, pa.string())))
        for judge in judges:
            table = judge(table)
        pending = pc.equal(table["status"], records.PENDING)
        left.append(given.filter(pending))
        fates.append(table.filter(pc.invert(pending)).select(FATES))
    return pa.concat_tables(left), pa.concat_tables(fates)
