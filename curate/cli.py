"""The ``cleanroom`` command line.

This module is its one entry point: the ``cleanroom`` script and ``python -m curate.cli`` (which
``accelerate launch -m curate.cli train ...`` starts in every process). It is also the one module of curate that
imports train and audit: it hangs their commands (``train.cli``, ``audit.cli``) on the parser.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from audit.cli import add_commands as add_audit_commands
from curate.optin.cli import add_commands as add_optin_commands
from train.cli import add_commands as add_train_commands


def _curate_run(args: argparse.Namespace) -> int:
    from curate.config import pipeline_path
    from curate.run import run

    stats = run(pipeline_path(args.pipeline), Path(args.out), address=args.address)
    print(json.dumps({"out": str(Path(args.out).resolve()), "records": stats["records"], "kept": stats["kept"],
                      "by_fate": stats["by_fate"]}, indent=2))
    return 0


def _query(args: argparse.Namespace) -> int:
    from curate.catalog import query

    table = query(Path(args.out), args.sql)
    print("\t".join(table.column_names))
    for row in table.to_pylist():
        print("\t".join("" if v is None else str(v) for v in row.values()))
    return 0


def parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; a command whose module is heavy gets its arguments only when ``chosen``."""
    top = argparse.ArgumentParser(prog="cleanroom", description=__doc__.partition("\n")[0])
    commands = top.add_subparsers(dest="command", required=True)

    curate = commands.add_parser("curate", help="curation jobs").add_subparsers(dest="action", required=True)
    run = curate.add_parser("run", help="run (or resume) a curation pipeline")
    run.add_argument("pipeline", help="a bundled pipeline by name (demo) or a pipeline YAML file")
    run.add_argument("--out", required=True, help="output folder of the run")
    run.add_argument("--address", help="Ray cluster address (default: start Ray locally)")
    run.set_defaults(handler=_curate_run)

    query = commands.add_parser("query", help="SQL over a run's catalog (tables: records, samples, licenses)")
    query.add_argument("out", help="output folder of a finished run")
    query.add_argument("sql")
    query.set_defaults(handler=_query)

    add_optin_commands(commands)
    add_train_commands(commands, chosen)
    add_audit_commands(commands, chosen)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The top level takes no option but -h, so its first other word is the command.
    chosen = next((word for word in argv if not word.startswith("-")), None)
    args = parser(chosen).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    try:
        return args.handler(args)
    except (FileNotFoundError, ValueError) as e:  # ConfigError is a ValueError
        print(f"cleanroom: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
