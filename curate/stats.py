"""Run statistics from the run manifest: counts per stage, source, license and reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from curate import records, stages

STATS = "stats.json"


def stage_column(con: duckdb.DuckDBPyConnection) -> str:
    """SQL for each record's deciding stage: its ``stage`` column, else (manifests written before the
    column existed) the stage that declares its reason."""
    declared = [(reason, stage.name) for stage in stages.declared().values()
                for reasons in stage.reasons.values() for reason in reasons]
    con.execute("CREATE TEMP TABLE declared (reason VARCHAR, stage VARCHAR)")
    con.executemany("INSERT INTO declared VALUES (?, ?)", declared)
    columns = {name for (name, *_) in con.execute("DESCRIBE m").fetchall()}
    by_reason = ("coalesce((SELECT d.stage FROM declared d WHERE d.reason = m.reason), "
                 "CASE WHEN starts_with(m.reason, 'download_http_') THEN 'fetch' END)")
    return f"coalesce(m.stage, {by_reason})" if "stage" in columns else by_reason


def _counts(con: duckdb.DuckDBPyConnection, by: str) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {}
    for group, fate, n in con.execute(f"SELECT coalesce({by}, '(none)'), fate, count(*) FROM m GROUP BY 1, 2 "
                                      "ORDER BY 1, 2").fetchall():
        result.setdefault(group, {})[fate] = n
    return result


def compute(records_dir: Path, order: list[str]) -> dict[str, Any]:
    """Counts of the run manifest under ``records_dir``; ``order`` is the run's stages (``stages.run_order``)."""
    con = duckdb.connect()
    manifest = con.read_parquet(str(records_dir / "*.parquet"))
    con.register("manifest", manifest)
    con.execute("CREATE VIEW m AS SELECT *, status || CASE WHEN reason = '' THEN '' ELSE ':' || reason END "
                "AS fate FROM manifest")
    total = con.execute("SELECT count(*) FROM m").fetchone()[0]
    fates = dict(con.execute("SELECT fate, count(*) FROM m GROUP BY 1 ORDER BY 1").fetchall())
    fates_by_stage: dict[str, dict[str, int]] = {stage: {} for stage in order}
    for stage, fate, n in con.execute(f"SELECT {stage_column(con)} AS stage, fate, count(*) FROM m "
                                      "WHERE status <> ? GROUP BY 1, 2 ORDER BY 1, 2", [records.KEPT]).fetchall():
        if stage not in fates_by_stage:  # a stage this run's pipeline does not name (a manifest edited by hand)
            raise ValueError(f"{records_dir}: {n} records {fate} in stage {stage!r}, not one of {', '.join(order)}")
        fates_by_stage[stage][fate] = n
    stage_counts, remaining = {}, total
    for stage in order[:-1]:
        removed = sum(fates_by_stage[stage].values())
        stage_counts[stage] = {"in": remaining, "removed": removed, "out": remaining - removed,
                               "fates": fates_by_stage[stage]}
        remaining -= removed
    stage_counts[order[-1]] = {"in": remaining, "written": fates.get(records.KEPT, 0)}
    return {
        "records": total,
        "kept": fates.get(records.KEPT, 0),
        "by_fate": fates,
        "by_stage": stage_counts,
        "by_source": _counts(con, "source"),
        "by_license": _counts(con, "license"),
    }
