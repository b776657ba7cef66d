"""The record: one row per candidate image, from source record to shard.

The Arrow schema is defined here once. Every stage reads and returns tables of this
schema (stages may add columns they own, but never drop these). A record's fate is the
pair ``status`` / ``reason``: ``pending`` while it is still moving through the run, then
exactly one terminal status with a reason code from the vocabulary below.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import PurePath
from typing import Any, Iterable, Mapping

import pyarrow as pa

PENDING = "pending"
KEPT = "kept"
REJECTED = "rejected"
DUPLICATE = "duplicate"
FAILED = "failed"
TERMINAL_STATUSES = (KEPT, REJECTED, DUPLICATE, FAILED)

# Reason codes are declared by the stages that give them (``curate.stages.declare``): a reason
# names *why*; the human-readable ``detail`` column says what exactly (field, value, HTTP
# message, ...), and ``stage`` which stage decided.


_HTTP_REASON = re.compile(r"^download_http_\d{3}$")  # download_http_error stands for these


def is_http_reason(reason: str) -> bool:
    return bool(_HTTP_REASON.match(reason))

SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_id", pa.string()),
        pa.field("origin", pa.string()),  # "<file>:<line>" the record was read from
        pa.field("url", pa.string()),
        pa.field("page_url", pa.string()),
        pa.field("license", pa.string()),  # registry id, null when the evidence is not recognised
        pa.field("license_field", pa.string()),  # the raw field the license came from ...
        pa.field("license_value", pa.string()),  # ... and its raw value
        pa.field("license_url", pa.string()),
        pa.field("license_evidence", pa.string()),  # JSON list of every piece: [{field, value}]
        pa.field("creator", pa.string()),
        pa.field("title", pa.string()),
        pa.field("date", pa.string()),
        pa.field("meta", pa.string()),  # JSON object: further descriptive fields for captions
        pa.field("attribution", pa.string()),
        pa.field("consent_id", pa.string()),
        pa.field("raw", pa.string()),  # the input as given, for records that could not be parsed
        pa.field("sha256", pa.string()),
        pa.field("original_width", pa.int32()),  # as displayed (EXIF orientation applied), before any resize
        pa.field("original_height", pa.int32()),
        pa.field("image_file", pa.string()),  # the stored image: <source>/images/NNNNN.parquet under OUT/work/fetch
        pa.field("image_row", pa.int64()),  # and its row in that file (curate.fetch.read_located)
        pa.field("aesthetic", pa.float32()),  # scores: which model made each is in OUT/run.yaml and stats.json
        pa.field("pwatermark", pa.float32()),
        pa.field("pnsfw", pa.float32()),
        pa.field("phash", pa.string()),
        pa.field("embedding_file", pa.string()),  # under OUT/embeddings, clip-retrieval layout
        pa.field("embedding_row", pa.int32()),
        pa.field("duplicate_of", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("caption_origin", pa.string()),
        pa.field("captions", pa.string()),  # JSON list of every caption made: [{text, origin, lang?, model?}]
        pa.field("caption_clip_similarity", pa.float64()),  # image-text cosine of the chosen caption
        pa.field("shard", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("stage", pa.string()),  # the stage that gave the terminal status (curate.stages)
    ]
)
COLUMNS = tuple(SCHEMA.names)
_INPUT_COLUMNS = frozenset(COLUMNS) - {"key", "status", "reason", "stage"}


class RecordError(ValueError):
    """A record that cannot be turned into a row; names the source, origin and field."""


def make_key(source: str, source_id: str) -> str:
    """Stable key from source and source id, never from row order.

    Webdataset splits a sample name at the first dot, so keys are ``<source>-<hex>``.
    """
    digest = hashlib.sha1(f"{source}\x00{source_id}".encode()).hexdigest()[:20]
    return f"{source}-{digest}"


def valid_reason(status: str, reason: str) -> bool:
    from curate import stages  # stages declare the reasons; they import this module

    if status == PENDING:
        return reason == ""
    if status not in TERMINAL_STATUSES:
        return False
    return reason in stages.reasons(status) or (status == FAILED and is_http_reason(reason))


def candidate(source: str, source_id: str, **fields: Any) -> dict[str, Any]:
    """A pending record for an image a source offers."""
    unknown = set(fields) - _INPUT_COLUMNS
    if unknown:
        raise RecordError(f"{source}:{source_id}: unknown record fields {sorted(unknown)}")
    row = {name: None for name in COLUMNS}
    row.update(fields)
    if isinstance(row["meta"], Mapping):
        row["meta"] = json.dumps({k: v for k, v in row["meta"].items() if v not in (None, "", [])},
                                 ensure_ascii=False)
    row.update(key=make_key(source, source_id), source=source, source_id=source_id,
               status=PENDING, reason="")
    return row


def rejected(source: str, source_id: str | None, reason: str, detail: str, **fields: Any) -> dict[str, Any]:
    """A record decided at ingest: kept in the manifest with its reason.

    Records without a usable id are keyed by the file name, line and raw text, so the key
    stays the same when the metadata is read from another folder.
    """
    ident = source_id if source_id else _origin_ident(fields.get("origin"), fields.get("raw"))
    row = candidate(source, ident, **fields)
    if not source_id:
        row["source_id"] = None
    return finish(row, REJECTED, reason, detail)


def _origin_ident(origin: str | None, raw: str | None) -> str:
    name = PurePath(origin).name if origin else ""
    return f"origin:{name}:{hashlib.sha1((raw or '').encode()).hexdigest()[:12]}"


def finish(row: dict[str, Any], status: str, reason: str, detail: str | None = None,
           stage: str | None = None) -> dict[str, Any]:
    """Give ``row`` its terminal fate, counted in ``stage``: by default the stage that declares ``reason``.

    A reason any stage may give (``decode_error``, ``stage_error``) must name its stage, and a stage
    that gives another's reason (a license conflict found in the image's own metadata) names itself.
    """
    from curate import stages

    if not valid_reason(status, reason):
        raise RecordError(f"record {row.get('key')}: invalid status/reason {status!r}/{reason!r}")
    decided_by = stage or stages.stage_of(status, reason)
    if decided_by is None:
        raise RecordError(f"record {row.get('key')}: {status}:{reason} is given by several stages; name the stage")
    row.update(status=status, reason=reason, detail=detail, stage=decided_by)
    return row


def to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{name: r.get(name) for name in COLUMNS} for r in rows], schema=SCHEMA)


def empty_table() -> pa.Table:
    return SCHEMA.empty_table()


def conform(table: pa.Table) -> pa.Table:
    """Cast a table (e.g. after a Ray round trip) back to the record schema, keeping extra columns."""
    extra = [n for n in table.column_names if n not in SCHEMA.names]
    columns, fields = [], []
    for field in SCHEMA:
        if field.name in table.column_names:
            columns.append(table[field.name].cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
        fields.append(field)
    for name in extra:
        columns.append(table[name])
        fields.append(table.schema.field(name))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def put_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    """Set a column a stage owns: replaced when the schema already has it, else appended."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)
