"""Record filters on one contract, and the registry a pipeline's ``filters:`` section names them from.

A filter decides one pending record at a time from its fields (``decide``: a reason and a
detail, or None to keep it). The base class owns the rest: the loop over a batch's pending
rows, the reasons a filter may give, its stage name, its config model and its error policy
(strict raises, the default fails the one record with ``failed:stage_error`` and goes on).

``register`` is the only wiring a new filter needs: it adds the filter's reasons to
``records.REASONS`` and its stage to ``curate.stats``, so a pipeline can name it under
``filters:``, the run manifest accepts its reasons, stats count them under its name and the
model card prints its ``describe()``. A pipeline may also name a filter by import path
(``my_package.filters:MinArea``): the module is imported, and its filter registered, when the
pipeline loads (in every process that reads the run's config).
"""

from __future__ import annotations

import importlib
import re
from typing import Any, ClassVar, Mapping

import pyarrow as pa
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from curate import records, stats

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


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
        if FILTERS.get(self.name) is not type(self):  # a worker process that unpickled a filter it never imported
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
            records.finish(row, records.FAILED, "stage_error",
                           f"{self.name}: record {row['key']}: {type(e).__name__}: {e}")
            return
        if verdict is None:
            return
        reason, detail = verdict
        if reason not in self.reasons:
            raise ValueError(f"filter {self.name} gave reason {reason!r}; its reasons: {', '.join(self.reasons)}")
        records.finish(row, records.REJECTED, reason, detail)


FILTERS: dict[str, type[Filter]] = {}
# The package's own filters, imported (and so registered) when a pipeline first names them.
BUILT_IN = {"resolution": "curate.score.resolution:Resolution"}


def register(cls: type[Filter]) -> type[Filter]:
    """Make ``cls`` a filter pipelines can name; its reasons join the record vocabulary."""
    if not _NAME.match(cls.name):
        raise ValueError(f"filter name {cls.name!r}: lower case letters, digits and _")
    if FILTERS.get(cls.name, cls) is not cls:
        raise ValueError(f"filter name {cls.name!r} is taken by {FILTERS[cls.name].__module__}")
    # A built-in filter's reasons are declared with its stage already (stats.STAGE_OF_REASON).
    taken = {r for r in cls.reasons if stats.STAGE_OF_REASON.get(r, cls.name) != cls.name}
    if taken:
        raise ValueError(f"filter {cls.name}: reasons {', '.join(sorted(taken))} belong to another stage")
    FILTERS[cls.name] = cls
    records.add_reasons(records.REJECTED, tuple(cls.reasons))
    stats.add_stage(cls.name, tuple(cls.reasons))
    return cls


def filter_class(key: str) -> type[Filter]:
    """A registered filter by name, or one named by import path (``module:Class``), registered on import."""
    if key in FILTERS:
        return FILTERS[key]
    key = BUILT_IN.get(key, key)
    if ":" in key:
        module, _, attr = key.partition(":")
        cls = getattr(importlib.import_module(module), attr, None)
        if not (isinstance(cls, type) and issubclass(cls, Filter)):
            raise ValueError(f"{key} is not a curate.stages.Filter")
        return register(cls) if FILTERS.get(cls.name) is not cls else cls
    raise PydanticCustomError("unknown_filter", "unknown filter '{key}'; known: {known} (or module:Class)",
                              {"key": key, "known": ", ".join(sorted({*FILTERS, *BUILT_IN}))})


def validate_filters(filters: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each filter's settings checked against its config model, defaults filled in."""
    checked = {}
    for key, settings in filters.items():
        cls = filter_class(key)
        try:
            checked[key] = cls.Config.model_validate(settings or {}).model_dump(mode="json")
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, [key, *err['loc']]))}: {err['msg']}" for err in e.errors())
            # A custom error type: pydantic would otherwise prefix the message with "Value error,".
            raise PydanticCustomError("filter_settings", "{problems}", {"problems": problems}) from None
    return checked


def configured(filters: Mapping[str, Mapping[str, Any]]) -> list[Filter]:
    """The filters of a pipeline's ``filters:`` section, in its order."""
    return [filter_class(key)(settings) for key, settings in filters.items()]
