"""The run folder ``OUT``: every path in it, its resolved config, and how a run is finished.

Layout::

    run.yaml          the resolved config (a resumed run must match it, field by field)
    work/<step>/      each step's output, named for its stage (curate.stages): ingest (policy
                      applied), fetch, filters, score, dedup, caption, shards (the assignment);
                      ``<step>.partial`` while it is being made
    shards/           webdataset tars + a parquet per shard, index.json written last
    records/          the run manifest: one row per input record with its fate
    embeddings/       the CLIP embedding store (clip-retrieval layout)
    catalog.duckdb    DuckDB tables over the above (``cleanroom query``)
    stats.json        counts per stage, source, license and reason, and the models behind the scores
    revocations.jsonl opt-in revocations applied to the run
    CREDITS.md, credits.parquet, DATASET_CARD.md, report/index.html
                      what people read (curate.report), written by finalize
    DONE              written last; a run with DONE is complete and re-running it is a no-op

Every reader and writer of ``OUT`` (the run, revocation, the catalogs, dedup against
earlier runs, the model card, provenance, memorization) goes through ``RunFolder``, so
the layout is spelled here once. Deliberately light: it imports neither Ray nor torch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from curate import stages, stats
from curate.config import ConfigError, RunConfig, load_yaml, validate
from curate.io import read_json_lines, write_parquet_atomic, write_text_atomic

log = logging.getLogger("cleanroom.run")

RUN_YAML = "run.yaml"
CATALOG = "catalog.duckdb"
DONE = "DONE"
WORK = "work"
SHARDS = "shards"
RECORDS = "records"
EMBEDDINGS = "embeddings"
REVOCATIONS = "revocations.jsonl"
# Settings that say how a run is executed, not what it makes: changing them between two
# invocations of the same run is allowed.
RUNTIME_FIELDS = ("mode", "pipeline.ray")


class RunMismatch(ConfigError):
    """A resumed run whose config differs from the one it started with; names every field."""


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @classmethod
    def at(cls, out: str | Path) -> RunFolder:
        return cls(Path(out).resolve())

    # -------------------------------------------------------------------- paths

    @property
    def run_yaml(self) -> Path:
        return self.root / RUN_YAML

    @property
    def done_marker(self) -> Path:
        return self.root / DONE

    @property
    def work(self) -> Path:
        return self.root / WORK

    def stage_dir(self, stage: str) -> Path:
        return self.work / stage

    def partial_dir(self, stage: str) -> Path:
        return self.work / f"{stage}.partial"

    def stage_glob(self, stage: str) -> str:
        """The glob DuckDB reads a stage's output with (Ray reads the folder)."""
        return str(self.stage_dir(stage) / "*.parquet")

    @property
    def fetch_root(self) -> Path:
        return self.work / "fetch"

    @property
    def shards(self) -> Path:
        return self.root / SHARDS

    @property
    def records(self) -> Path:
        return self.root / RECORDS

    @property
    def manifest(self) -> Path:
        return self.records / "records.parquet"

    @property
    def embeddings(self) -> Path:
        return self.root / EMBEDDINGS

    @property
    def catalog(self) -> Path:
        return self.root / CATALOG

    @property
    def stats_file(self) -> Path:
        return self.root / stats.STATS

    @property
    def revocations(self) -> Path:
        return self.root / REVOCATIONS

    # -------------------------------------------------------------------- state

    @property
    def done(self) -> bool:
        return self.done_marker.exists()

    def config(self) -> RunConfig:
        """The run's resolved config as it was written; an error naming the file if there is none."""
        if not self.run_yaml.is_file():
            raise FileNotFoundError(f"{self.run_yaml}: missing; {self.root} is not a curation run folder")
        return validate(RunConfig, load_yaml(self.run_yaml), self.run_yaml)

    def stats(self) -> dict[str, Any]:
        return json.loads(self.stats_file.read_text())

    def revocation_log(self) -> list[dict[str, Any]]:
        """The opt-in revocations applied to the run, oldest first (a corrupt line is reported and skipped)."""
        return read_json_lines(self.revocations)

    def has_records(self) -> bool:
        return any(self.records.glob("*.parquet"))

    def query(self, sql: str, parameters: list[Any] | None = None) -> list[tuple]:
        """Rows of a read-only query on the run's catalog."""
        con = duckdb.connect(str(self.catalog), read_only=True)
        try:
            return con.execute(sql, parameters or []).fetchall()
        finally:
            con.close()

    # -------------------------------------------------------------------- lifecycle

    def claim(self, config: RunConfig) -> None:
        """Write run.yaml for a new run, or check that a resumed one asks for what it started with.

        Compared field by field after both are read with today's schema, so a field added with
        a default since the run started is no difference, and every difference is named.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.run_yaml.exists():
            write_text_atomic(config.to_yaml(), self.run_yaml)
            return
        try:
            started = self.config()
        except ConfigError as e:
            if self.done:  # written by a version whose schema we no longer read: the run is still finished
                log.warning("%s: cannot compare with this version's config (%s); the run is finished", self.root, e)
                return
            raise
        differences = config_differences(started, config)
        if differences:
            raise RunMismatch(f"{self.run_yaml}: {self.root} holds a run of a different config: "
                              f"{'; '.join(differences)}. Use a new --out (or delete {self.root} to start over)")

    def finalize(self, manifest: pa.Table | None = None) -> dict[str, Any]:
        """Manifest (when given), catalog, stats with the models behind the scores, the reports
        people read (``curate.report``), then DONE.

        Also what revocation calls after rewriting records: the catalog, stats and reports follow
        them, and ``models`` stays as the run recorded it, so nothing the run knew is lost.
        """
        from curate import catalog, report  # both read the run folder through this module

        if manifest is not None:
            write_parquet_atomic(manifest, self.manifest)
        catalog.build(self.root)
        order = stages.run_order(self.config().pipeline.filters)
        run_stats = {**stats.compute(self.records, order), "models": self._models()}
        write_text_atomic(json.dumps(run_stats, indent=2), self.stats_file)
        report.write(self)
        write_text_atomic("", self.done_marker)
        return run_stats


    def _models(self) -> dict[str, Any]:
        """Which model made each score column: as the run recorded it, else from its config."""
        if self.stats_file.exists():
            return self.stats().get("models", {})
        scoring = self.config().pipeline.scoring
        return scoring.describe() if scoring else {}


def config_differences(started: RunConfig, asked: RunConfig) -> list[str]:
    """``field: was -> now`` for every field that differs, runtime-only settings left out."""
    before, after = _flatten(started.model_dump(mode="json")), _flatten(asked.model_dump(mode="json"))
    changed = []
    for name in sorted(set(before) | set(after)):
        if any(name == f or name.startswith(f + ".") for f in RUNTIME_FIELDS):
            continue
        if before.get(name, _MISSING) != after.get(name, _MISSING):
            changed.append(f"{name}: {_shown(before.get(name, _MISSING))} -> {_shown(after.get(name, _MISSING))}")
    return changed


_MISSING = object()


def _shown(value: Any) -> str:
    return "(absent)" if value is _MISSING else json.dumps(value)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaves; list items by index, so a reordered list names its positions."""
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, list) and value:
        return {k: v for i, item in enumerate(value) for k, v in _flatten(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value}
