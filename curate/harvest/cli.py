"""``cleanroom sources pull SOURCE --out DIR [--limit N] [--query Q] [--base-url URL] [--contact C]
[--from-dump FILE|URL]``.

Wired into ``curate.cli`` by ``add_commands``; the harvest modules are imported only when a pull runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_commands(subparsers: Any) -> None:
    """Add ``sources`` and its actions to the top-level ``cleanroom`` subparsers."""
    sources = subparsers.add_parser("sources", help="harvest a source's public API into the files its adapter reads")
    actions = sources.add_subparsers(dest="action", required=True)
    pull = actions.add_parser("pull", help="harvest (or continue harvesting) one source into a folder")
    pull.add_argument("source", help="a bundled manifest by name (met, commons, ...) or a manifest YAML file")
    pull.add_argument("--out", required=True, help="folder for the harvested files (a pull there continues)")
    pull.add_argument("--limit", type=int, help="stop after this many records in all (a later pull takes more)")
    pull.add_argument("--query", help="what to harvest, in the source's terms (see docs/sources.md); "
                                      "default: the whole collection")
    pull.add_argument("--base-url", help="API root to ask instead of the manifest's (a mirror, a test server)")
    pull.add_argument("--from-dump", metavar="FILE|URL", help="read the source's published data dump instead of "
                      "its API (met: MetObjects.csv, whose public-domain ids are then asked of the API; cleveland: "
                      "data.json; aic: the artic-api-data tar); a URL is downloaded to OUT/raw/dump/ first")
    pull.add_argument("--contact", help="e-mail or URL sent in the User-Agent (default: harvest.contact "
                                        "of the manifest)")
    pull.set_defaults(handler=_pull)


def _pull(args: argparse.Namespace) -> int:
    from curate.config import load_manifest, manifest_path
    from curate.harvest.pull import FAILURES, pull

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    manifest = load_manifest(manifest_path(args.source, Path.cwd()))
    settings = manifest.harvest
    if args.base_url:
        settings = settings.model_copy(update={"base_url": args.base_url})
    summary = pull(manifest.source, manifest.adapter, settings, Path(args.out), query=args.query, limit=args.limit,
                   contact=args.contact, dump=args.from_dump)
    print(json.dumps({"source": summary.source, "out": str(summary.out.resolve()), "records": summary.records,
                      "failures": summary.failures, "pages": summary.pages, "complete": summary.complete,
                      "stopped_by": summary.stopped_by}, indent=2))
    print("# the pipeline entry that reads them:")
    print(summary.sources_entry(), end="")
    if summary.failures:
        print(f"cleanroom: {summary.failures} request(s) or record(s) of {summary.source} failed; each is in "
              f"{summary.out / FAILURES} with its reason", file=sys.stderr)
    if not summary.complete:
        print(f"cleanroom: the harvest of {summary.source} stopped early: {summary.stopped_by}; "
              f"run the same command again to continue it", file=sys.stderr)
        return 1
    return 0
