"""The ``cleanroom`` command line.

This module is its one entry point: the ``cleanroom`` script and ``python -m curate.cli`` (which
``accelerate launch -m curate.cli train ...`` starts in every process). It is also the one module of curate that
imports train and audit: it hangs their commands (``train.cli``, ``audit.cli``) on the parser.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shlex
import sys
import traceback
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from audit.cli import add_commands as add_audit_commands
from curate.harvest.cli import add_commands as add_harvest_commands
from curate.optin.cli import add_commands as add_optin_commands
from train.cli import add_commands as add_train_commands


def _curate_run(args: argparse.Namespace) -> int:
    from curate.config import load_pipeline, pipeline_path
    from curate.outcome import problems
    from curate.run import run
    from curate.runfolder import RunFolder

    pipeline = pipeline_path(args.pipeline)
    load_pipeline(pipeline)  # a pipeline that does not validate stops here, before OUT or a demo corpus is made
    stats = run(pipeline, Path(args.out), address=args.address)
    print(json.dumps({"out": str(Path(args.out).resolve()), "records": stats["records"], "kept": stats["kept"],
                      "by_fate": stats["by_fate"]}, indent=2))
    found = problems(RunFolder.at(Path(args.out)))
    for problem in found:  # a finished run that produced nothing usable is a failure a script must see
        print(f"cleanroom: {problem}", file=sys.stderr)
    return 1 if found else 0


def _query(args: argparse.Namespace) -> int:
    import duckdb

    from curate.catalog import query
    from curate.config import ConfigError

    try:
        table = query(Path(args.out), args.sql)
    except duckdb.Error as e:  # the user's SQL: DuckDB's first line says what is wrong with it
        raise ConfigError(f"query: {str(e).strip().splitlines()[0]}") from None
    print("\t".join(table.column_names))
    for row in table.to_pylist():
        print("\t".join("" if v is None else str(v) for v in row.values()))
    return 0


def _report(args: argparse.Namespace) -> int:
    from curate import report

    print(json.dumps({name: str(path) for name, path in report.write(Path(args.out)).items()}, indent=2))
    return 0


Model = TypeVar("Model", bound=BaseModel)


class OptionError(ValueError):
    """A command-line value that does not validate; the message names the option, the value and what it must be."""


def from_options(model: type[Model], values: Mapping[str, Any], flags: Mapping[str, str],
                 whole: str | None = None) -> Model:
    """``model(**values)`` for values given on the command line (``flags``: field -> the option that sets it).

    A ValidationError about them becomes one line per problem, naming the option as typed, the value given and
    the constraint or the choices; an error about the whole model (a model validator's) names ``whole``'s
    option. An error about a field no option sets is not the user's: it keeps its traceback.
    """
    try:
        return model(**values)
    except ValidationError as e:
        problems = [option_problem(err, values, flags, whole) for err in e.errors()]
        if None in problems:
            raise
        raise OptionError("; ".join(problems)) from None


def option_problem(err: Mapping[str, Any], values: Mapping[str, Any], flags: Mapping[str, str],
                   whole: str | None) -> str | None:
    """``--steps 0: Input should be greater than or equal to 1``; None when no option set the field."""
    field = str(err["loc"][0]) if err["loc"] else whole
    if field not in flags:
        return None
    value = values.get(field)
    given = flags[field] if isinstance(value, bool) else f"{flags[field]} {shlex.quote(str(value))}"
    return f"{given}: {err['msg'].removeprefix('Value error, ')}"


def version() -> str:
    try:
        return metadata.version("cleanroom")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


class HelpWithDefaults(argparse.HelpFormatter):
    """An option's default after its help, where it has one worth saying (not None, not an unset flag).

    argparse's ArgumentDefaultsHelpFormatter adds the default only to an option that has a help text; here
    an option without one gets its default as its help, and a help text that gives it already is left as it
    is. The choices are in the option's line (``--precision {fp16,fp32}``) either way.
    """

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and says_default(action):
            action = copy.copy(action)
            action.help = self._get_help_string(action)
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if not says_default(action) or "default" in (action.help or ""):  # a help text that says it already
            return action.help
        shown = "empty" if action.default == "" else "%(default)s"  # "(default: )" would read as a missing word
        return f"{action.help} (default: {shown})" if action.help else f"(default: {shown})"


def says_default(action: argparse.Action) -> bool:
    return action.default not in (None, False, argparse.SUPPRESS)


class Parser(argparse.ArgumentParser):
    """Help that shows defaults, and a usage error as one line naming the option (with its choices) and exit 2.

    Every subcommand's parser is of this class too (argparse makes them of their parent's class)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpWithDefaults)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; a command whose module is heavy gets its arguments only when ``chosen``."""
    top = Parser(prog="cleanroom", description=__doc__.partition("\n")[0])
    top.add_argument("--version", action="version", version=f"cleanroom {version()}")
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

    report = commands.add_parser("report", help="write a finished run's report/index.html, DATASET_CARD.md, "
                                                "CREDITS.md and credits.parquet again")
    report.add_argument("out", help="output folder of a finished run")
    report.set_defaults(handler=_report)

    add_harvest_commands(commands)
    add_optin_commands(commands)
    add_train_commands(commands, chosen)
    add_audit_commands(commands, chosen)
    return top


# The packages whose own `raise` statements give the errors meant for users.
OWN_CODE = tuple(f"{Path(__file__).resolve().parents[1] / package}/" for package in ("curate", "train", "audit"))


def expected(error: BaseException) -> bool:
    """An error for the user, shown as one line: a missing file, or a ValueError that cleanroom's own code
    raised on purpose (ConfigError and the others name the file, field or option). A ValueError from inside
    a library, or from a failed conversion in our code, is a bug and keeps its traceback."""
    if isinstance(error, FileNotFoundError):
        return True
    frames = traceback.extract_tb(error.__traceback__)
    if not isinstance(error, ValueError) or not frames:
        return False
    where = frames[-1]
    return str(Path(where.filename).resolve()).startswith(OWN_CODE) and (where.line or "").lstrip().startswith("raise ")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The top level takes no option but -h and --version, so its first other word is the command.
    chosen = next((word for word in argv if not word.startswith("-")), None)
    args = parser(chosen).parse_args(argv)
    # Our own progress at INFO; libraries (open_clip logs on the root logger, Ray, faiss) only warn.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for ours in ("cleanroom", "curate", "train", "audit"):
        logging.getLogger(ours).setLevel(logging.INFO)
    try:
        return args.handler(args)
    except (FileNotFoundError, ValueError) as e:
        if not expected(e):
            raise
        print(f"cleanroom: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
