"""``cleanroom sources pull``: one source's public API -> the files its adapter reads, under ``OUT``.

Layout of a harvest folder::

    <output>            what the adapter reads (``pages.jsonl``, ``objects.jsonl``, ...), one record a line
    <files>             whole files a harvester adds (AIC's ``config.json``, the Met's object id list)
    failures.jsonl      every request that failed for good and every record that could not be kept, with why
    raw/NNNN/NNNNNNN.*  every page as the server sent it; raw/index.jsonl says which URL each one came from
    harvest.yaml        the settings, query and User-Agent of the pull
    cursor.json         where the harvest stands (see ``curate.harvest.cursor``)

A harvester module (``curate.harvest.<adapter>``) has ``OUTPUT``, the file its adapter reads,
``steps(client, request, state, out)``, which yields ``Step``s from ``state`` on, and
``NEEDS_KEY = True`` when its API takes requests only with a key, ``APPENDS = False`` when it
downloads whole files instead of appending records (NGA), and ``dump_steps`` (same signature)
when it can read the source's published dump instead (``--from-dump``, see
``curate.harvest.dumps``), with ``DUMP_ASKS_API = True`` when that dump only lists what to ask the
API for (the Met's CSV); this module owns writing the steps, the cursor, ``--limit`` and the
summary.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import yaml

from curate.harvest import HARVESTERS, dumps
from curate.harvest.client import Page, PoliteClient, RequestFailed
from curate.harvest.cursor import Cursor, Identity
from curate.harvest.settings import HarvestSettings
from curate.io import write_bytes_atomic, write_text_atomic

FAILURES = "failures.jsonl"
RAW = "raw"
RAW_INDEX = f"{RAW}/index.jsonl"
DUMP_FOLDER = f"{RAW}/dump"  # a dump given as a URL is downloaded here, and kept
SETTINGS = "harvest.yaml"
PAGES_PER_FOLDER = 1000

log = logging.getLogger("cleanroom.harvest")


@dataclass(frozen=True)
class Request:
    """What a harvester is asked for: the API root, the user's query, and the manifest's settings."""

    base_url: str
    query: str | None
    settings: HarvestSettings
    api_key: str | None = None
    dump: str | None = None  # the published dump to read (a file's absolute path, or a URL)


@dataclass
class Step:
    """One unit of harvest; ``state`` is where the step after it starts (None: the harvest is finished)."""

    state: dict[str, Any] | None
    records: list[dict[str, Any]] = field(default_factory=list)
    pages: list[tuple[str, bytes, str]] = field(default_factory=list)  # (reported url, body, file suffix)
    failures: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # name under OUT -> content


# Objects a listing names but the API no longer serves: failures, and the harvest goes on.
GONE = frozenset({404, 410})


def fetch_objects(client: PoliteClient, objects: list[tuple[Any, str]], parse: Any, step: Step) -> None:
    """GET each ``(id, url)`` into ``step``: its record and raw page, or its failure when it is gone.

    A batch refused in full for another reason (403, or 5xx after retries) raises: the API is down or
    refusing, and a re-run asks this batch again.
    """
    results = client.get_many([(url, {}) for _, url in objects], parse=parse)
    failed = [result for result in results if not isinstance(result, Page)]
    if objects and len(failed) == len(objects) and not any(f.status in GONE for f in failed):
        raise failed[0]
    for (ident, _), result in zip(objects, results):
        if isinstance(result, Page):
            step.pages.append((result.url, result.body, ".json"))
            step.records.append(result.value)
        else:
            step.failures.append(result.record(id=ident))


Steps = Callable[[PoliteClient, Request, "dict[str, Any] | None", Path], Iterator[Step]]


class Harvester(Protocol):
    OUTPUT: str

    def steps(self, client: PoliteClient, request: Request, state: dict[str, Any] | None,
              out: Path) -> Iterator[Step]: ...


@dataclass(frozen=True)
class Summary:
    source: str
    out: Path
    output: Path
    records: int
    failures: int
    pages: int
    complete: bool  # every step was done (with --limit: or the limit was reached)
    stopped_by: str | None  # why a pull ended early: a request that failed for good

    def sources_entry(self) -> str:
        """The pipeline ``sources:`` entry that reads what was harvested."""
        entry = {"sources": [{"manifest": self.source, "metadata": [str(self.output.resolve())]}]}
        return yaml.safe_dump(entry, sort_keys=False)


def harvester(adapter: str) -> Harvester:
    try:
        return importlib.import_module(HARVESTERS[adapter])
    except KeyError:
        raise ValueError(f"no harvester for adapter {adapter!r}; harvesters: {', '.join(sorted(HARVESTERS))}") from None


def pull(source: str, adapter: str, settings: HarvestSettings, out: Path, *, query: str | None = None,
         limit: int | None = None, contact: str | None = None, client: PoliteClient | None = None,
         dump: str | None = None) -> Summary:
    """Harvest into ``out`` (continuing the harvest already there), from the API or, given ``dump`` (a
    file or a URL), from the source's published dump; ``client`` is for tests (injected time)."""
    module = harvester(adapter)
    steps = module.steps
    if dump is not None:
        steps = _dump_steps(source, module, query)
        dump = dumps.normalized(dump)
    if not settings.base_url and (dump is None or getattr(module, "DUMP_ASKS_API", False)):
        raise ValueError(f"source {source}: no API base URL: set harvest.base_url in its manifest or pass --base-url")
    if getattr(module, "NEEDS_KEY", False) and not settings.api_key_env:
        raise ValueError(f"source {source}: its API needs a key: name the environment variable that holds it in "
                         f"harvest.api_key_env of its manifest")
    request = Request((settings.base_url or "").rstrip("/"), query, settings, _api_key(source, settings), dump)
    identity = Identity(source=source, harvester=adapter, base_url=request.base_url, query=query,
                        params=settings.params, dump=dump)
    out.mkdir(parents=True, exist_ok=True)
    appended = (FAILURES, RAW_INDEX) + ((module.OUTPUT,) if getattr(module, "APPENDS", True) else ())
    cursor = Cursor.open(out, identity, appended=appended)
    cursor.save(out)  # before anything is appended: the files of a folder with no cursor are not a harvest's
    client = client or PoliteClient(settings, _contact(source, contact or settings.contact))
    write_text_atomic(yaml.safe_dump({"identity": identity.model_dump(), "settings": settings.model_dump(),
                                      "user_agent": client.user_agent}, sort_keys=False), out / SETTINGS)
    stopped_by = None
    with client:
        try:
            _run(module, steps, client, request, cursor, out, limit)
        except RequestFailed as e:  # a listing page the harvest cannot go past; a re-run asks again
            _append(out, cursor, FAILURES, [e.record(step=cursor.state)])
            cursor.failures += 1
            cursor.save(out)
            stopped_by = str(e)
    complete = stopped_by is None and (cursor.done or (limit is not None and cursor.records >= limit))
    return Summary(source, out, out / module.OUTPUT, cursor.records, cursor.failures, cursor.pages, complete,
                   stopped_by)


def _dump_steps(source: str, module: Harvester, query: str | None) -> Steps:
    if not hasattr(module, "dump_steps"):
        readers = sorted(name for name, path in HARVESTERS.items() if hasattr(importlib.import_module(path),
                                                                                   "dump_steps"))
        raise ValueError(f"source {source}: no harvest from a dump (--from-dump is for {', '.join(readers)}); "
                         f"pull it from its API")
    if query is not None:
        raise ValueError(f"source {source}: a dump is the whole collection; a pull --from-dump takes no --query")
    return module.dump_steps


def _run(module: Harvester, steps: Steps, client: PoliteClient, request: Request, cursor: Cursor, out: Path,
         limit: int | None) -> None:
    if cursor.done or (limit is not None and cursor.records >= limit):
        return
    for step in steps(client, request, cursor.state, out):
        fresh = step.records[cursor.skip:]
        room = len(fresh) if limit is None else limit - cursor.records
        taken = fresh[:room]
        _commit(module, step, taken, cursor, out, again=cursor.skip > 0)
        log.info("%s: %d records, %d pages, %d failures so far", request.base_url, cursor.records, cursor.pages,
                 cursor.failures)
        if len(taken) < len(fresh):  # cut by --limit: this step is done again, past what was taken
            cursor.skip += len(taken)
        else:
            # The last step and the end of the harvest are saved together: a kill between two saves
            # would otherwise leave a finished harvest's cursor at its start.
            cursor.state, cursor.skip, cursor.done = step.state, 0, step.state is None
        cursor.save(out)
        if cursor.done or (limit is not None and cursor.records >= limit):
            return
    cursor.done = True  # a harvester that ended without a last step (an empty listing)
    cursor.save(out)


def _commit(module: Harvester, step: Step, taken: list[dict], cursor: Cursor, out: Path, again: bool) -> None:
    """Write a step's pages and files, then append its lines; the caller saves the cursor last. A step done
    ``again`` (past what an earlier --limit took of it) has had its pages and failures written already."""
    index = []
    for url, body, suffix in [] if again else step.pages:
        name = f"{RAW}/{cursor.pages // PAGES_PER_FOLDER:04d}/{cursor.pages:07d}{suffix}"
        write_bytes_atomic(body, out / name)
        index.append({"page": cursor.pages, "file": name, "url": url})
        cursor.pages += 1
    for name, content in step.files.items():
        write_bytes_atomic(content, out / name)
    _append(out, cursor, RAW_INDEX, index)
    failures = [] if again else step.failures
    _append(out, cursor, FAILURES, failures)
    if getattr(module, "APPENDS", True):
        _append(out, cursor, module.OUTPUT, taken)
    cursor.records += len(taken)
    cursor.failures += len(failures)


def _append(out: Path, cursor: Cursor, name: str, lines: list[dict]) -> None:
    """Append JSON lines to ``out/name`` (fsynced) and note its new length in the cursor."""
    path = out / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        for line in lines:
            # ASCII: a value holding U+2028 or U+0085 must not split its line for a reader that splits there.
            f.write(json.dumps(line, ensure_ascii=True).encode("ascii") + b"\n")
        f.flush()
        os.fsync(f.fileno())
        cursor.offsets[name] = f.tell()


def _contact(source: str, contact: str | None) -> str:
    if not contact or not contact.strip():
        raise ValueError(f"source {source}: no contact for the User-Agent: pass --contact EMAIL_OR_URL or set "
                         f"harvest.contact in its manifest (API operators ask for a way to reach a harvester)")
    return contact.strip()


def _api_key(source: str, settings: HarvestSettings) -> str | None:
    if not settings.api_key_env:
        return None
    key = os.environ.get(settings.api_key_env, "").strip()
    if not key:
        raise ValueError(f"source {source}: its API needs a key: set the environment variable "
                         f"{settings.api_key_env} (harvest.api_key_env in its manifest)")
    return key
