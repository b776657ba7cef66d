"""Run statistics from the run manifest: counts per stage, source, license and reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from curate import records

STATS = "stats.json"

# The stage that decides each reason, in pipeline order: a record leaves the run at the
# first stage that gives it a terminal status. Filters registered with curate.stages add
# their stage and reasons (``add_stage``).
STAGE_OF_REASON = {
    **{r: "ingest" for r in ("malformed_record", "missing_id", "missing_url", "no_image", "not_image")},
    **{r: "policy" for r in ("license_unknown", "license_not_allowed", "license_conflict", "permission_unverified")},
    "revoked": "ingest",  # a revoked record counts as never admitted
    **{r: "fetch" for r in (*records.REASONS[records.FAILED], "site_disallowed", "too_many_pixels")},
    "min_side": "resolution", "max_aspect_ratio": "resolution",
    "low_aesthetic": "score", "watermark": "score", "nsfw": "score",
    **{r: "dedup" for r in records.REASONS[records.DUPLICATE]},
    "low_clip_similarity": "caption",
}
STAGES = ["ingest", "policy", "fetch", "resolution", "score", "dedup", "caption", "shards"]
# Failures a later stage records, whose detail starts with that stage's name.
_STAGE_IN_DETAIL = ("decode_error", "stage_error")


def add_stage(name: str, reasons: tuple[str, ...]) -> None:
    """A filter's stage, counted after the filters before it (they all run in the filter step, after fetch)."""
    if name not in STAGES:
        STAGES.insert(STAGES.index("score"), name)
    STAGE_OF_REASON.update({reason: name for reason in reasons})


def stage_of(status: str, reason: str, detail: str | None = None) -> str:
    if status == records.KEPT:
        return "shards"
    if status == records.FAILED:
        # A stored image that does not decode fails in the image stage that read it, and a filter
        # that fails on a record fails it there: their details start with the stage's name.
        stage = (detail or "").split(":", 1)[0]
        return stage if reason in _STAGE_IN_DETAIL and stage in STAGES else "fetch"
    return STAGE_OF_REASON[reason]


def _counts(con: duckdb.DuckDBPyConnection, by: str) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {}
    for group, fate, n in con.execute(f"SELECT coalesce({by}, '(none)'), fate, count(*) FROM m GROUP BY 1, 2 "
                                      "ORDER BY 1, 2").fetchall():
        result.setdefault(group, {})[fate] = n
    return result


def compute(records_dir: Path) -> dict[str, Any]:
    con = duckdb.connect()
    manifest = con.read_parquet(str(records_dir / "*.parquet"))
    con.register("manifest", manifest)
    con.execute("CREATE VIEW m AS SELECT *, status || CASE WHEN reason = '' THEN '' ELSE ':' || reason END "
                "AS fate FROM manifest")
    total = con.execute("SELECT count(*) FROM m").fetchone()[0]
    fates = dict(con.execute("SELECT fate, count(*) FROM m GROUP BY 1 ORDER BY 1").fetchall())
    removed = {stage: 0 for stage in STAGES}
    for status, reason, stage, n in con.execute(
            "SELECT status, reason, CASE WHEN reason IN ('decode_error', 'stage_error') "
            "THEN split_part(detail, ':', 1) END, "
            "count(*) FROM m GROUP BY 1, 2, 3").fetchall():
        if status != records.KEPT:
            removed[stage_of(status, reason, stage)] += n
    stages, remaining = {}, total
    for stage in STAGES[:-1]:
        stages[stage] = {"in": remaining, "removed": removed[stage], "out": remaining - removed[stage]}
        remaining -= removed[stage]
    stages["shards"] = {"in": remaining, "written": fates.get(records.KEPT, 0)}
    return {
        "records": total,
        "kept": fates.get(records.KEPT, 0),
        "by_fate": fates,
        "by_stage": stages,
        "by_source": _counts(con, "source"),
        "by_license": _counts(con, "license"),
    }
