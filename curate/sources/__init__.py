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

import importlib
import json
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
}

Reader = Callable[[Path, str, dict], Iterator[dict]]


def load_adapter(name: str) -> Reader:
    try:
        module = importlib.import_module(ADAPTERS[name])
    except KeyError:
        raise ValueError(f"unknown adapter {name!r}; known adapters: {', '.join(sorted(ADAPTERS))}") from None
    return module.read


def json_lines(path: Path) -> Iterator[tuple[str, Any, str | None]]:
    """Yield ``(origin, value, error)`` per non-blank line; ``error`` is set when the line is not JSON."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            origin = f"{path}:{number}"
            try:
                yield origin, json.loads(line), None
            except json.JSONDecodeError as e:
                yield origin, line.rstrip("\n"), f"invalid JSON: {e.msg} at column {e.colno}"


def text(value: Any) -> str | None:
    """A display string or None: strips whitespace, maps empty strings and non-scalars to None."""
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    s = str(value).strip()
    return s or None
