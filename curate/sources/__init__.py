"""Source adapters: each source's own record format -> record rows (see ``curate.records``).

An adapter is a module with an options model and one function::

    class Options(AdapterOptions): ...
    def read(path: Path, source: str, options: dict | Options) -> Iterator[dict]

``path`` is one metadata file (or folder, for the local source), ``source`` the source
name used in keys (from the manifest), ``options`` the adapter options from the
manifest merged with the pipeline's, which ``curate.config`` checks against ``Options``
when the pipeline loads (``read`` parses them again: tests call it with a plain dict).
It yields one row per candidate image, built with ``records.candidate`` or,
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
from typing import Any, Callable, Iterator, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

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
    "walters": "curate.sources.walters",
    "getty": "curate.sources.getty",
}

Reader = Callable[[Path, str, Any], Iterator[dict]]
Model = TypeVar("Model", bound=BaseModel)


class AdapterOptions(BaseModel):
    """Base of an adapter's ``Options``: a misspelt option is an error, not a silently used default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _module(name: str):
    try:
        return importlib.import_module(ADAPTERS[name])
    except KeyError:
        raise ValueError(f"unknown adapter {name!r}; known adapters: {', '.join(sorted(ADAPTERS))}") from None


def load_adapter(name: str) -> Reader:
    return _module(name).read


def options_model(name: str) -> type[BaseModel]:
    return _module(name).Options


def parse_options(model: type[Model], options: Any, source: str) -> Model:
    """``options`` (a manifest's dict, or already parsed) as ``model``; errors name the source and the field."""
    if isinstance(options, model):
        return options
    try:
        return model.model_validate(options)
    except ValidationError as e:
        problems = "; ".join(f"options.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ValueError(f"source {source}: {problems}") from None


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
