"""The catalog as the reports read it: one read-only DuckDB connection, and the counts several reports show."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb

from curate.runfolder import RunFolder

# Every caption a sample's ``captions`` JSON lists (curate.records), one row each: key, c {text, origin, lang, model}.
CAPTIONS_MADE = ("SELECT key, unnest(from_json(captions, '[{\"text\": \"VARCHAR\", \"origin\": \"VARCHAR\", "
                 "\"lang\": \"VARCHAR\", \"model\": \"VARCHAR\"}]')) AS c FROM samples WHERE captions IS NOT NULL")


@contextmanager
def connect(folder: RunFolder) -> Iterator[duckdb.DuckDBPyConnection]:
    if not folder.catalog.is_file():
        raise FileNotFoundError(f"{folder.catalog}: no catalog; is {folder.root} the output folder of a finished run?")
    con = duckdb.connect(str(folder.catalog), read_only=True)
    try:
        yield con
    finally:
        con.close()


def rows(con: duckdb.DuckDBPyConnection, sql: str, parameters: list[Any] | None = None) -> list[tuple]:
    # fetchall, not fetchone: DuckDB keeps a connection busy until its result is read to the end.
    return con.execute(sql, parameters or []).fetchall()


def dicts(con: duckdb.DuckDBPyConnection, sql: str, parameters: list[Any] | None = None) -> list[dict[str, Any]]:
    cursor = con.execute(sql, parameters or [])
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return rows(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name])[0][0] > 0


def has_registry(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the catalog holds the consent registry (the run read an opt-in store that was beside it)."""
    return has_table(con, "optin_consents") and has_table(con, "optin_contributors")


def fates(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str, str, int]]:
    """(source, license, status, reason, records) for every group of the run manifest, in order."""
    return rows(con, "SELECT source, coalesce(license, '(none)'), status, reason, count(*) FROM records "
                     "GROUP BY ALL ORDER BY ALL")


def samples_by_source(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int]]:
    """(source, license, samples) over the shards."""
    return rows(con, "SELECT source, license, count(*) FROM samples GROUP BY ALL ORDER BY ALL")
