"""A finished run that produced nothing usable says so, with its top reasons and the likely cause.

``problems`` reads a finished run folder: a run that kept no record, a source whose every
record was malformed (with what its adapter reads and what the file looks like instead), and
kept samples whose captions are mostly empty. ``cleanroom curate run`` prints them and exits
non-zero, so a script or a scheduler sees the failure a 0-sample ``DONE`` would hide.
"""

from __future__ import annotations

import importlib

from curate import records
from curate.runfolder import RunFolder
from curate.sources import ADAPTERS

# Above this share of kept samples with an empty KEY.txt, the shards cannot train a text-to-image model.
MAX_EMPTY_CAPTIONS = 0.5
MALFORMED = f"{records.REJECTED}:malformed_record"


def problems(folder: RunFolder) -> list[str]:
    stats = folder.stats()
    found = []
    if stats["kept"] == 0:
        found.append(f"the run kept no record of {stats['records']}; top reasons: {top_reasons(stats['by_fate'])}")
    adapters = {source.source: source.adapter for source in folder.config().sources}
    for source, fates in stats["by_source"].items():
        if fates.get(MALFORMED, 0) == sum(fates.values()) > 0:
            found.append(f"every record of source {source} ({sum(fates.values())}) is malformed: "
                         f"{malformed_hint(folder, source, adapters.get(source))}")
    if stats["kept"]:
        empty, kept = folder.query("SELECT count(*) FILTER (WHERE coalesce(trim(caption), '') = ''), count(*) "
                                   "FROM samples")[0]
        if empty / kept > MAX_EMPTY_CAPTIONS:
            found.append(f"{empty} of {kept} kept samples have an empty caption: check the captions: section "
                         "(choose, templates) and the fields the source's records carry")
    return found


def top_reasons(by_fate: dict[str, int], count: int = 3) -> str:
    ranked = sorted(((n, fate) for fate, n in by_fate.items() if not fate.startswith(records.KEPT)), reverse=True)
    return ", ".join(f"{fate} {n}" for n, fate in ranked[:count]) or "none"


def malformed_hint(folder: RunFolder, source: str, adapter: str | None) -> str:
    """What the source's adapter reads, and what its input looks like instead."""
    reads = _reads(adapter)
    sample = folder.query("SELECT raw FROM records WHERE source = ? AND reason = 'malformed_record' "
                          "AND raw IS NOT NULL LIMIT 1", [source])
    looks = looks_like(sample[0][0]) if sample else "the records kept no raw text"
    return f"the {adapter} adapter reads {reads}; {looks}"


def _reads(adapter: str | None) -> str:
    if adapter not in ADAPTERS:
        return "its own format"
    doc = (importlib.import_module(ADAPTERS[adapter]).__doc__ or "").strip().splitlines()
    return doc[0].rstrip(".") if doc else "its own format"


def looks_like(raw: str) -> str:
    text = raw.lstrip("\ufeff \t\r\n")
    shown = " ".join(text[:60].split())
    if text.startswith("<"):
        return f"this input looks like HTML or XML ({shown!r})"
    if text.startswith(("{", "[")):
        return f"this input is JSON, but not in the shape the adapter reads ({shown!r})"
    if "," in text or "\t" in text:
        return f"this input looks like CSV or TSV ({shown!r})"
    return f"this input starts {shown!r}"
