"""``cleanroom optin submit|revoke|serve``: wired into ``curate.cli`` by ``add_commands``.

    cleanroom optin submit FOLDER --store OPTIN [--pipeline P]
    cleanroom optin revoke CONTRIBUTOR --store OPTIN --evidence TEXT [--run OUT ...]
    cleanroom optin revoke --contact EMAIL --store OPTIN --evidence TEXT [--run OUT ...]
    cleanroom optin revoke --store OPTIN --run OUT [--run OUT ...]     (apply every recorded revocation)
    cleanroom optin serve --store OPTIN [--pipeline P] [--host H] [--port N] [--run OUT ...] [--insecure-cookies]

``--store`` may be left out when ``--pipeline`` names a pipeline whose opt-in source has
one store folder. Options (limits, ``allow_hosts``, the intake's rate limits and
timeouts) come from that pipeline's opt-in source, else from ``manifests/optin.yaml``.
``serve`` is meant to run behind a reverse proxy that terminates TLS (SECURITY.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from curate.optin import options as optin_options
from curate.optin.errors import OptinError
from curate.optin.store import Store


def add_commands(subparsers: Any) -> None:
    """Add ``optin`` and its actions to the top-level ``cleanroom`` subparsers."""
    optin = subparsers.add_parser("optin", help="opt-in contributions: submit, revoke, intake web page")
    actions = optin.add_subparsers(dest="action", required=True)

    submit = actions.add_parser("submit", help="submit a contributor's folder (consent.yaml + images)")
    submit.add_argument("folder", help="folder with consent.yaml, images and optional metadata.jsonl")
    _store_arguments(submit)
    submit.set_defaults(handler=_handled(_submit))

    revoke = actions.add_parser("revoke", help="revoke a contributor's consent and remove their samples from runs")
    who = revoke.add_mutually_exclusive_group()
    who.add_argument("contributor", nargs="?", help="contributor id (ctb-...)")
    who.add_argument("--contact", help="revoke every contributor registered with this e-mail address")
    revoke.add_argument("--store", required=True, help="contributions store folder")
    revoke.add_argument("--evidence", help="how the request reached us (required with a contributor or contact)")
    revoke.add_argument("--run", action="append", default=[], help="finished run folder to clean (repeatable)")
    revoke.set_defaults(handler=_handled(_revoke))

    serve = actions.add_parser("serve", help="run the intake web page")
    _store_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--run", action="append", default=[], help="run folder a revocation is applied to")
    serve.add_argument("--insecure-cookies", action="store_true",
                       help="cookies without the Secure flag, for plain http on a test machine only")
    serve.set_defaults(handler=_handled(_serve))


def _store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="contributions store folder (created if missing)")
    parser.add_argument("--pipeline", help="take the opt-in source's options (and store) from this pipeline")


def _handled(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except OptinError as e:
            print(f"cleanroom: error: {e}", file=sys.stderr)
            return 2

    return run


def _store_and_options(args: argparse.Namespace) -> tuple[Store, optin_options.SourceOptions]:
    if args.pipeline:
        options, stores = optin_options.from_pipeline(Path(args.pipeline))
        if not args.store and len(stores) != 1:
            raise OptinError(f"{args.pipeline}: the opt-in source names {len(stores)} store folders; give --store")
        path = Path(args.store or stores[0])
    else:
        if not args.store:
            raise OptinError("give --store (or --pipeline naming a pipeline with an opt-in source)")
        options, path = optin_options.from_manifest(), Path(args.store)
    if "{" in str(path):
        raise OptinError(f"store folder {path} uses a run variable; give --store")
    return Store(path, create=True), options


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _submit(args: argparse.Namespace) -> int:
    from curate.optin.submit import submit_folder

    store, options = _store_and_options(args)
    report = submit_folder(store, Path(args.folder), options)
    _print(report.as_dict())
    return 1 if report.refused else 0


def _revoke(args: argparse.Namespace) -> int:
    from curate.optin import revoke

    store = Store(Path(args.store))
    runs = [Path(r) for r in args.run]
    if not args.contributor and not args.contact:
        if not runs:
            raise OptinError("give a contributor, --contact, or --run folders to apply recorded revocations to")
        _print([r.as_dict() for r in revoke.apply(store, runs)])
        return 0
    if not args.evidence:
        raise OptinError("--evidence: say how the revocation request reached us (kept in the audit log)")
    if args.contributor:
        ids = [args.contributor]
    else:
        ids = [c.contributor_id for c in store.contributors_by_contact(args.contact)]
    if not ids:
        raise OptinError(f"{args.store}: no contributor registered with that contact")
    evidence = {"channel": "cli", "statement": args.evidence}
    results = []
    for contributor_id in ids:
        revocation, applied = revoke.revoke(store, contributor_id, evidence, runs)
        results.append({"revocation": vars(revocation), "runs": [r.as_dict() for r in applied]})
    _print(results)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from curate.optin import server
    from curate.optin.web import create_app

    store, options = _store_and_options(args)
    app = create_app(store, options, runs=[Path(r) for r in args.run], secure_cookies=not args.insecure_cookies)
    uvicorn.Server(server.config(app, options.intake, host=args.host, port=args.port)).run()
    return 0
