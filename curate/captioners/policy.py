"""The caption stage: every caption a pending record gets, and the one that becomes KEY.txt.

It runs after the model captioner (when there is one), so it sees the model's captions
in the ``captions`` column, adds the metadata captions and the combined ones, and sets
``caption`` / ``caption_origin`` by the pipeline's ``choose`` order.
"""

from __future__ import annotations

from typing import Any, Mapping

import pyarrow as pa

from curate import records, templates
from curate.captioners import text as captext
from curate.captioners.coca import ORIGIN as MODEL
from curate.captioners.config import CaptionConfig
from curate.captioners.metadata import ORIGIN as METADATA, MetadataTemplates

COMBINED = "combined"


class Captioner:
    """Stage: pending records -> their metadata and combined captions, and the chosen caption."""

    def __init__(self, config: CaptionConfig, adapters: Mapping[str, str] | None = None):
        """``adapters`` maps source names to adapter names (run.py: ``{s.source: s.adapter}``)."""
        self.config = config
        self.metadata = MetadataTemplates(config.metadata, config.max_chars, adapters)

    def combined(self, fields: dict[str, Any], model_entries: list[dict[str, str]]) -> list[dict[str, str]]:
        view = next(self.metadata.language_views(fields))[0]
        out = []
        for made in model_entries:
            filled = templates.render(self.config.combined_template, {**view, "model": made["text"]})
            text = captext.finish(filled, self.config.max_chars) if filled else None
            if text:
                out.append(captext.entry(text, COMBINED, model=made.get("model")))
        return out

    def choose(self, entries: list[dict[str, str]]) -> dict[str, str] | None:
        return next((e for origin in self.config.choose for e in entries if e["origin"] == origin), None)

    def caption(self, row: dict[str, Any]) -> None:
        """Fill ``captions``, ``caption`` and ``caption_origin`` of one pending row."""
        fields = self.metadata.fields(row)
        entries = captext.read(row.get(captext.COLUMN))
        entries = captext.replace(entries, {METADATA}, self.metadata.captions(row["source"], fields))
        made = [e for e in entries if e["origin"] == MODEL]
        fresh = self.combined(fields, made) if COMBINED in self.config.choose else []
        entries = captext.replace(entries, {COMBINED}, fresh)
        chosen = self.choose(entries)
        row[captext.COLUMN] = captext.dump(entries)
        row["caption"], row["caption_origin"] = (chosen["text"], chosen["origin"]) if chosen else (None, None)

    def __call__(self, table: pa.Table) -> pa.Table:
        table = records.conform(table)
        rows = table.to_pylist()
        for row in rows:
            if row["status"] == records.PENDING:
                self.caption(row)
        return pa.Table.from_pylist(rows, schema=captext.with_column(table.schema))
