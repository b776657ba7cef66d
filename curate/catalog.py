"""The run's DuckDB catalog: the run manifest and shard parquet as queryable tables.

Tables, not views over file paths, so the catalog keeps working when OUT is moved or
copied. It is rebuilt from the parquet files, which stay the source of truth.
``records`` is one row per input record with its fate; ``samples`` one row per sample
in a shard; ``licenses`` the registry the run was checked against; ``optin_*`` the
consent registry of the run's opt-in stores and the revocations applied to the run
(``curate.optin.catalog``), when the run read an opt-in source.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from curate import licenses, shards
from curate.io import atomic_path
from curate.optin.catalog import run_tables as optin_tables
from curate.runfolder import RunFolder


def _licenses_table(used: list[str]) -> pa.Table:
    """The registry, plus the jurisdiction ports (made on demand, not listed) the run's records carry."""
    ports = []
    for lid in sorted(set(used) - set(licenses.registry())):
        try:
            ports.append(licenses.get(lid))
        except KeyError:  # not an id the registry resolves: the records table still shows it as given
            continue
    return pa.Table.from_pylist([
        {"license": lic.id, "name": lic.name, "url": lic.url, "family": lic.family,
         "allowed_for_training": lic.allowed_for_training, "attribution_required": lic.attribution_required}
        for lic in [*licenses.registry().values(), *ports]
    ])


def build(out: Path) -> Path:
    folder = RunFolder.at(out)
    path = folder.catalog
    with atomic_path(path) as tmp:
        tmp.unlink()  # DuckDB refuses to open an empty file as a database
        con = duckdb.connect(str(tmp))
        con.execute("CREATE TABLE records AS SELECT *, status || CASE WHEN reason = '' THEN '' "
                    "ELSE ':' || reason END AS fate FROM read_parquet(?)", [str(folder.records / "*.parquet")])
        shard_files = sorted(folder.shards.glob("*.parquet"))
        if shard_files:
            con.execute("CREATE TABLE samples AS SELECT * FROM read_parquet(?)", [[str(p) for p in shard_files]])
        else:  # a run that kept nothing still has the shards' columns (stored_width, ...) to query
            con.register("no_samples", shards.SAMPLE_SCHEMA.empty_table())
            con.execute("CREATE TABLE samples AS SELECT * FROM no_samples")
        used = [lid for (lid,) in con.execute("SELECT DISTINCT license FROM records WHERE license IS NOT NULL "
                                               "AND license <> ''").fetchall()]
        con.register("licenses_arrow", _licenses_table(used))
        con.execute("CREATE TABLE licenses AS SELECT * FROM licenses_arrow")
        for name, table in optin_tables(out).items():
            con.register(f"{name}_arrow", table)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_arrow")
        con.close()
    return path


def query(out: Path, sql: str) -> pa.Table:
    path = RunFolder.at(out).catalog
    if not path.exists():
        raise FileNotFoundError(f"{path}: no catalog; is {out} the output folder of a finished run?")
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()
