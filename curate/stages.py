"""The run's stages: one vocabulary of stage names and reasons, and the record-filter contract.

Every stage declares itself where it is implemented (``declare``): its name and, by status,
every reason it may give with what the reason means. ``records`` checks a record's fate
against these declarations, ``curate.stats`` counts each record in the stage that decided it
(the record's ``stage`` column), and the cards print what each stage did. Stage names are the
same everywhere: in stats, in the cards and as the work folders under ``OUT/work``.

A run passes its records through ``ORDER``: ``filters`` stands for the record filters a
pipeline names under ``filters:``, in its order.

A record filter decides one pending record at a time from its fields (``decide``: a reason
and a detail, or None to keep it). The base class owns the rest: the loop over a batch's
pending rows, the reasons a filter may give, its stage name, its config model and its error
policy (strict raises, the default fails the one record with ``failed:stage_error`` and goes
on). ``register`` is the only wiring a new filter needs: it declares the filter's stage, so a
pipeline can name it under ``filters:``, the run manifest accepts its reasons, stats count
them under its name and the cards print its ``describe()``. A pipeline may also name a filter
by import path (``my_package.filters:MinArea``): the module is imported, and its filter
registered, when the pipeline loads (in every process that reads the run's config).
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping

import pyarrow as pa
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from curate import records

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

FILTER_STEP = "filters"  # the place of the pipeline's record filters in ORDER, and their work folder
ORDER = ("ingest", "policy", "fetch", FILTER_STEP, "score", "dedup", "caption", "shards")
# Failures any stage that reads a record's stored image or runs a filter may give: the record's
# ``stage`` column names the stage.
ANY_STAGE = {records.FAILED: {"decode_error": "the stored image does not decode",
                              "stage_error": "the stage failed on this record; the detail says how"}}
# Modules that declare the package's own stages when imported (all light: no torch, Ray or img2dataset).
DECLARING = ("curate.ingest", "curate.verdict", "curate.fetch", "curate.score.filter", "curate.dedup",
             "curate.captioners.similarity", "curate.shards")


@dataclass(frozen=True)
class Stage:
    name: str
    reasons: Mapping[str, Mapping[str, str]]  # status -> reason code -> what it means


DECLARED: dict[str, Stage] = {}
_STAGE_OF_REASON: dict[str, str] = {}


def declare(name: str, **reasons_by_status: Mapping[str, str]) -> Stage:
    """Declare stage ``name`` and the reasons it gives, by status (``rejected=``, ``duplicate=``, ``failed=``)."""
    if not _NAME.match(name):
        raise ValueError(f"stage name {name!r}: lower case letters, digits and _")
    unknown = set(reasons_by_status) - set(records.TERMINAL_STATUSES)
    if unknown:
        raise ValueError(f"stage {name}: no status {', '.join(sorted(unknown))}")
    codes = [code for reasons in reasons_by_status.values() for code in reasons]
    taken = sorted(code for code in codes if _STAGE_OF_REASON.get(code, name) != name
                   or code in ANY_STAGE[records.FAILED])
    if taken:
        raise ValueError(f"stage {name}: reasons {', '.join(taken)} belong to another stage")
    stage = Stage(name, {status: dict(reasons) for status, reasons in reasons_by_status.items()})
    DECLARED[name] = stage
    _STAGE_OF_REASON.update({code: name for code in codes})
    return stage


def declared() -> dict[str, Stage]:
    """Every declared stage, the package's own included."""
    _import_declaring()
    return DECLARED


@functools.cache
def _import_declaring() -> None:
    """Once per process: ``records.finish`` asks for every record. The built-in filters declare theirs too."""
    for module in (*DECLARING, *(path.partition(":")[0] for path in BUILT_IN.values())):
        importlib.import_module(module)


def reasons(status: str) -> tuple[str, ...]:
    """Every reason a record of ``status`` may have."""
    found = [code for stage in declared().values() for code in stage.reasons.get(status, {})]
    return (*found, *ANY_STAGE.get(status, {}))


def stage_of(status: str, reason: str) -> str | None:
    """The stage that gives ``reason``; None for a reason any stage may give (the record's column says)."""
    if status == records.KEPT:
        return "shards"
    declared()
    if status == records.FAILED and records.is_http_reason(reason):
        return "fetch"
    return _STAGE_OF_REASON.get(reason)


def run_order(filters: Iterable[str]) -> list[str]:
    """A run's stages in the order its records pass them; ``filters``: the keys of its ``filters:`` section."""
    names = []
    for name in ORDER:
        names += [filter_class(key).name for key in filters] if name == FILTER_STEP else [name]
    return names


# ---------------------------------------------------------------- record filters


class Filter:
    name: ClassVar[str]  # the key under ``filters:`` and the stage its rejections count in
    reasons: ClassVar[Mapping[str, str]]  # reason code -> what it means
    Config: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel | Mapping[str, Any] | None = None, strict: bool = False):
        self.config = config if isinstance(config, self.Config) else self.Config.model_validate(config or {})
        self.strict = strict

    def decide(self, row: dict[str, Any]) -> tuple[str, str] | None:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the dataset and model cards: what the filter keeps."""
        raise NotImplementedError

    def __call__(self, table: pa.Table) -> pa.Table:
        if DECLARED.get(self.name) is None:  # a worker process that unpickled a filter it never imported
            register(type(self))
        table = records.conform(table)
        rows = table.to_pylist()
        for row in rows:
            if row["status"] == records.PENDING:
                self._apply(row)
        return pa.Table.from_pylist(rows, schema=table.schema)

    def _apply(self, row: dict[str, Any]) -> None:
        try:
            verdict = self.decide(row)
        except Exception as e:  # one record's bad fields must not stop a run of millions
            if self.strict:
                raise
            records.finish(row, records.FAILED, "stage_error", f"record {row['key']}: {type(e).__name__}: {e}",
                           stage=self.name)
            return
        if verdict is None:
            return
        reason, detail = verdict
        if reason not in self.reasons:
            raise ValueError(f"filter {self.name} gave reason {reason!r}; its reasons: {', '.join(self.reasons)}")
        records.finish(row, records.REJECTED, reason, detail)


FILTERS: dict[str, type[Filter]] = {}
# The package's own filters, imported (and so registered) when a pipeline first names them.
BUILT_IN = {"resolution": "curate.score.resolution:Resolution",
            "robots_txt": "curate.rights.filters:RobotsTxt", "tdm_reservation": "curate.rights.filters:TdmReservation",
            "embedded_rights": "curate.rights.filters:EmbeddedRights"}


def register(cls: type[Filter]) -> type[Filter]:
    """Make ``cls`` a filter pipelines can name under ``filters:``; its stage and reasons are declared."""
    if FILTERS.get(cls.name, cls) is not cls or (cls.name in DECLARED and cls.name not in FILTERS):
        owner = FILTERS[cls.name].__module__ if cls.name in FILTERS else "a built-in stage"
        raise ValueError(f"filter name {cls.name!r} is taken by {owner}")
    declare(cls.name, rejected=cls.reasons)
    FILTERS[cls.name] = cls
    return cls


def filter_class(key: str) -> type[Filter]:
    """A registered filter by name, or one named by import path (``module:Class``), registered on import."""
    if key in FILTERS:
        return FILTERS[key]
    key = BUILT_IN.get(key, key)
    if ":" in key:
        cls = imported_class(key, Filter)
        return register(cls) if FILTERS.get(cls.name) is not cls else cls
    raise PydanticCustomError("unknown_filter", "unknown filter '{key}'; known: {known} (or module:Class)",
                              {"key": key, "known": ", ".join(sorted({*FILTERS, *BUILT_IN}))})


def imported_class(path: str, base: type) -> type:
    """The class a ``module:Class`` path names, which must subclass ``base``."""
    module, _, attr = path.partition(":")
    cls = getattr(importlib.import_module(module), attr, None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{path} is not a {base.__module__}.{base.__qualname__}")
    return cls


def settings_error(key: str, error: ValidationError) -> PydanticCustomError:
    """A stage's settings error as one message naming each field under ``key``."""
    problems = "; ".join(f"{'.'.join(map(str, [key, *err['loc']]))}: {err['msg']}" for err in error.errors())
    # A custom error type: pydantic would otherwise prefix the message with "Value error,".
    return PydanticCustomError("stage_settings", "{problems}", {"problems": problems})


def validate_filters(filters: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each filter's settings checked against its config model, defaults filled in."""
    checked = {}
    for key, settings in filters.items():
        cls = filter_class(key)
        try:
            checked[key] = cls.Config.model_validate(settings or {}).model_dump(mode="json")
        except ValidationError as e:
            raise settings_error(key, e) from None
    return checked


def configured(filters: Mapping[str, Mapping[str, Any]]) -> list[Filter]:
    """The filters of a pipeline's ``filters:`` section, in its order."""
    return [filter_class(key)(settings) for key, settings in filters.items()]
