"""Resolution filter on the original image size (before any resize for the shard)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from curate import records
from curate.config import ResolutionFilter


class Resolution:
    """Reject pending records whose original short side or aspect ratio is out of bounds."""

    def __init__(self, settings: ResolutionFilter):
        self.min_side = settings.min_side
        self.max_aspect_ratio = settings.max_aspect_ratio

    def verdict(self, width: int, height: int) -> tuple[str, str] | None:
        short, long = sorted((width, height))
        if short < self.min_side:
            return "min_side", f"original {width}x{height}: short side {short} < min_side {self.min_side}"
        if long / short > self.max_aspect_ratio:
            return ("max_aspect_ratio",
                    f"original {width}x{height}: aspect ratio {long / short:.2f} > {self.max_aspect_ratio}")
        return None

    def __call__(self, table: pa.Table) -> pa.Table:
        table = records.conform(table)
        rows = table.to_pylist()
        pending = pc.equal(table["status"], records.PENDING).to_pylist()
        for row, is_pending in zip(rows, pending):
            if is_pending:
                verdict = self.verdict(row["original_width"], row["original_height"])
                if verdict:
                    records.finish(row, records.REJECTED, *verdict)
        return pa.Table.from_pylist(rows, schema=table.schema)
