"""Ingest: read each source's metadata files through its adapter into record rows.

One work item is one metadata file of one source; a glob that matches nothing is an
error (a typo must not look like an empty source). The attribution line is rendered
here from the manifest's template once the license is known.
"""

from __future__ import annotations

import datetime
import glob
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from curate import licenses, permissions, records, stages, templates, verdict
from curate.config import ConfigError, ResolvedSource
from curate.optin.layout import REVOKED
from curate.sources import load_adapter

stages.declare("ingest", rejected={
    "malformed_record": "unparseable line or wrong types: ``raw`` keeps the input",
    "missing_id": "the source record has no id",
    "missing_url": "the source record has no image URL",
    "no_image": "the source record has no image (metadata only, or not open access)",
    "not_image": "the media item is not a still image (3D, scanned book, video)",
    REVOKED: "the opt-in contributor revoked their consent (curate.optin): counted as never admitted",
})


def work_items(sources: list[ResolvedSource]) -> list[dict[str, Any]]:
    items = []
    for source in sources:
        for pattern in source.metadata:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            if not matches or not Path(matches[0]).exists():
                raise ConfigError(f"source {source.source}: metadata {pattern} matches no file")
            items.extend({"source": source.source, "path": m} for m in matches)
    return items


def attribution(row: dict[str, Any], source: ResolvedSource) -> str | None:
    license_name = None
    if row["license"]:
        try:
            license_name = licenses.get(row["license"]).name
        except KeyError:
            license_name = row["license"]  # unregistered: the policy stage rejects it, the line still reads
    values = {**row, "source_name": source.name, "license_name": license_name}
    return templates.render(source.attribution, values)


class Ingest:
    """Ray Data stage: a batch of work items (source, path) -> record rows of those files.

    Rows come out in tables of at most ``rows_per_block``, each its own Ray block, so a metadata
    file of millions of records neither sits in one worker's memory nor reaches the next stages
    as a single task.
    """

    def __init__(self, sources: list[ResolvedSource], rows_per_block: int = 10_000):
        self.sources = {s.source: s for s in sources}
        self.permissions = {s.source: [permissions.load(p, s.source) for p in s.permissions] for s in sources}
        self.rows_per_block = rows_per_block

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        rows = []
        for row in self.rows(batch):
            rows.append(row)
            if len(rows) == self.rows_per_block:
                yield records.to_table(rows)
                rows = []
        if rows:
            yield records.to_table(rows)

    def rows(self, batch: pa.Table) -> Iterator[dict[str, Any]]:
        today = datetime.date.today()
        for item in batch.to_pylist():
            source = self.sources[item["source"]]
            read = load_adapter(source.adapter)
            for row in read(Path(item["path"]), source.source, source.options):
                if row["status"] == records.PENDING:
                    self._add_permissions(row, today)
                    row["attribution"] = attribution(row, source)
                yield row

    def _add_permissions(self, row: dict[str, Any], today: datetime.date) -> None:
        """Evidence from the permission files that cover the record, before what the record says."""
        found = [p for on_file in self.permissions[row["source"]] if (p := on_file.piece(row["source_id"], today))]
        if found:
            row.update(verdict.primary([*found, *verdict.row_pieces(row)]))
