"""Source adapters: each source's own record format -> record rows (see ``curate.records``).

An adapter is a module with one function::

    def read(path: Path, source: str, options: dict) -> Iterator[dict]

``path`` is one metadata file (or folder, for the local source), ``source`` the source
name used in keys (from the manifest), ``options`` the adapter options from the
manifest. It yields one row per candidate image, built with ``records.candidate`` or,
for input it cannot use, ``records.rejected`` with a reason: malformed input never
stops a run. Adapters do no I/O beyond reading ``path`` and files named in ``options``.
"""

from __future__ import annotations

import bz2
import gzip
import importlib
import json
import unicodedata
from pathlib import Path
from typing import Any, Callable, Iterator

ADAPTERS = {
    "cleveland": "curate.sources.cleveland",
    "met": "curate.sources.met",
    "aic": "curate.sources.aic",
    "smithsonian": "curate.sources.smithsonian",
    "nga": "curate.sources.nga",
    "commons": "curate.sources.commons",
    "finna": "curate.sources.finna",
    "flickr": "curate.sources.flickr",
    "local": "curate.sources.local",
    "optin": "curate.sources.optin",
}

Reader = Callable[[Path, str, dict], Iterator[dict]]


def load_adapter(name: str) -> Reader:
    try:
        module = importlib.import_module(ADAPTERS[name])
    except KeyError:
        raise ValueError(f"unknown adapter {name!r}; known adapters: {', '.join(sorted(ADAPTERS))}") from None
    return module.read


def _open_text(path: Path):
    """Bulk dumps (the Smithsonian's) ship as bzip2 or gzip JSON lines: read them as they are."""
    opener = {".bz2": bz2.open, ".gz": gzip.open}.get(Path(path).suffix, open)
    return opener(path, "rt", encoding="utf-8", errors="replace")


def json_lines(path: Path) -> Iterator[tuple[str, Any, str | None]]:
    """Yield ``(origin, value, error)`` per non-blank line; ``error`` is set when the line is not JSON."""
    with _open_text(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            origin = f"{path}:{number}"
            try:
                yield origin, json.loads(line), None
            except json.JSONDecodeError as e:
                yield origin, line.rstrip("\n"), f"invalid JSON: {e.msg} at column {e.colno}"


def text(value: Any) -> str | None:
    """A display string in NFC, or None: strips whitespace, maps empty strings and non-scalars to None.

    NFC because dumps mix composed and decomposed accents, and equal text must compare equal.
    """
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    s = unicodedata.normalize("NFC", str(value).strip())
    return s or None


def json_documents(path: Path) -> Iterator[tuple[str, Any, str | None]]:
    """Like ``json_lines``, but a file that is one multi-line JSON document yields it once.

    Saved API responses are often pretty-printed; JSON lines files are not touched
    beyond their first line, so big dumps are still streamed.
    """
    if _first_line_is_json(path):
        yield from json_lines(path)
        return
    try:
        with _open_text(path) as f:
            document = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError):
        yield from json_lines(path)  # a JSON lines file whose first line is broken
        return
    yield f"{path}:1", document, None


def _first_line_is_json(path: Path) -> bool:
    with _open_text(path) as f:
        for line in f:
            if line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError:
                    return False
                return True
    return True
