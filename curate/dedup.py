"""Deduplication. Exact: the same original bytes (sha256) offered by several records.

The keep policy decides which member of a duplicate group survives, in this order:
the license the policy prefers (e.g. CC0 before "public domain" with no mark), then the
larger image, then the source listed first in the pipeline, then the key (so the choice
never depends on row order). Dedup is a global step: ``exact_decisions`` reads the
run's parquet with DuckDB and writes (key, duplicate_of) pairs; ``ApplyDuplicates``
is the per-batch stage that marks the losers.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from curate import records


def exact_decisions(parquet_glob: str, license_rank: dict[str, int], source_priority: dict[str, int]) -> pa.Table:
    """(key, duplicate_of) for every pending record whose sha256 an earlier-ranked record shares."""
    con = duckdb.connect()
    con.register("license_rank", pa.table({"license": list(license_rank), "rank": list(license_rank.values())}))
    con.register("source_priority",
                 pa.table({"source": list(source_priority), "priority": list(source_priority.values())}))
    worst = len(license_rank) + 1
    return con.sql(f"""
        WITH ranked AS (
            SELECT r.key, r.sha256,
                   row_number() OVER (
                       PARTITION BY r.sha256
                       ORDER BY coalesce(l.rank, {worst}), r.width * r.height DESC,
                                coalesce(s.priority, {worst}), r.key) AS place
            FROM read_parquet(?) r
            LEFT JOIN license_rank l ON l.license = r.license
            LEFT JOIN source_priority s ON s.source = r.source
            WHERE r.status = '{records.PENDING}' AND r.sha256 IS NOT NULL
        )
        SELECT d.key, k.key AS duplicate_of
        FROM ranked d JOIN ranked k ON d.sha256 = k.sha256 AND k.place = 1
        WHERE d.place > 1
        ORDER BY d.key
    """, params=[parquet_glob]).to_arrow_table()


class ApplyDuplicates:
    """Mark pending records that lost their duplicate group as ``duplicate`` of the survivor."""

    def __init__(self, decisions: pa.Table):
        self.survivor = dict(zip(decisions["key"].to_pylist(), decisions["duplicate_of"].to_pylist()))

    def __call__(self, table: pa.Table) -> pa.Table:
        table = records.conform(table)
        rows = table.to_pylist()
        for row in rows:
            kept = self.survivor.get(row["key"])
            if kept and row["status"] == records.PENDING:
                row["duplicate_of"] = kept
                records.finish(row, records.DUPLICATE, "exact_sha256", f"same original bytes as {kept}")
        return pa.Table.from_pylist(rows, schema=table.schema)
