"""Captioners. The metadata captioner turns a record's title, creator and date into text."""

from __future__ import annotations

import pyarrow as pa

from curate import records, templates
from curate.config import Captions


class MetadataCaptioner:
    """Caption pending records from their metadata with the pipeline's templates."""

    origin = "metadata"

    def __init__(self, settings: Captions):
        self.templates = settings.metadata_templates

    def caption(self, row: dict) -> str | None:
        for template in self.templates:
            text = templates.render(template, row)
            if text:
                return text
        return None

    def __call__(self, table: pa.Table) -> pa.Table:
        table = records.conform(table)
        rows = table.to_pylist()
        for row in rows:
            if row["status"] == records.PENDING and row["caption"] is None:
                row["caption"] = self.caption(row)
                row["caption_origin"] = self.origin if row["caption"] else None
        return pa.Table.from_pylist(rows, schema=table.schema)
