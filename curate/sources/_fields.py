"""Field helpers shared by the museum adapters (Cleveland, Met, AIC, Smithsonian, NGA).

Museum dumps agree on little, but they share the same failure shapes: ids that are
numbers in one release and strings in the next, booleans spelled ``true``/``"True"``/``1``,
lists where a string was expected, and decomposed accents. These helpers absorb those
once, and ``json_records`` turns every unusable line into a rejected row instead of an
exception, so one bad record never stops a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from curate import records
from curate.sources import json_lines, text

RowsFor = Callable[[dict, str], Iterable[dict]]

_TRUE = frozenset({"true", "1", "yes", "y"})
_FALSE = frozenset({"false", "0", "no", "n"})


def require_path(path: Path, source: str, *, folder_ok: bool = False) -> Path:
    """``path`` as a Path; a clear error naming it when it is not there (a setup error, not bad input)."""
    path = Path(path)
    if not (path.is_file() or (folder_ok and path.is_dir())):
        what = "file or folder" if folder_ok else "file"
        raise FileNotFoundError(f"{source}: metadata {what} not found: {path}")
    return path


def ident(value: Any) -> str | None:
    """An id as a string: ints and non-empty strings; None for anything else (bools, floats, lists)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return text(value) if isinstance(value, str) else None


def flag(value: Any) -> bool | None:
    """A yes/no field as given by JSON (``true``), CSV (``"True"``, ``"1"``) or ints; None when unclear."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return {1: True, 0: False}.get(value)
    if isinstance(value, str):
        word = value.strip().lower()
        return True if word in _TRUE else False if word in _FALSE else None
    return None


def raw(value: Any) -> str | None:
    """A raw value for ``license_value``/``raw``: strings as given, everything else as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def joined(values: Any, sep: str = "; ") -> str | None:
    """A list of display strings as one string (duplicates and blanks dropped); a scalar as itself."""
    if not isinstance(values, list):
        return text(values)
    parts = [text(v) for v in values]
    return sep.join(dict.fromkeys(p for p in parts if p)) or None


def kind(value: Any) -> str:
    """What a JSON value is, for details: "a string", "an array", "null"."""
    if value is None:
        return "null"
    names = ((bool, "a boolean"), (int, "a number"), (float, "a number"), (str, "a string"), (list, "an array"),
             (dict, "an object"))
    return next((name for t, name in names if isinstance(value, t)), f"a {type(value).__name__}")


def malformed(source: str, origin: str, detail: str, value: Any, source_id: str | None = None) -> dict:
    return records.rejected(source, source_id, "malformed_record", f"{origin}: {detail}",
                            origin=origin, raw=raw(value))


def guarded(source: str, origin: str, value: Any, rows_for: RowsFor) -> list[dict]:
    """``rows_for(record, origin)`` for one parsed record; a non-object or a shape the adapter
    did not foresee becomes one ``malformed_record`` row that keeps the input."""
    if not isinstance(value, dict):
        return [malformed(source, origin, f"record is {kind(value)}, expected an object", value)]
    try:
        return list(rows_for(value, origin))
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as e:
        return [malformed(source, origin, f"unexpected record shape ({type(e).__name__}: {e})", value)]


def json_records(path: Path, source: str, rows_for: RowsFor) -> Iterator[dict]:
    """Rows for every line of a JSON-lines file; bad lines become rejected rows, never exceptions.

    A missing file raises here, when the adapter is called, not at the first row.
    """
    return _json_records(require_path(path, source), source, rows_for)


def _json_records(path: Path, source: str, rows_for: RowsFor) -> Iterator[dict]:
    for origin, value, error in json_lines(path):
        if error:
            yield malformed(source, origin, error, value)
        else:
            yield from guarded(source, origin, value, rows_for)
