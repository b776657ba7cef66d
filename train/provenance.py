"""Which curation runs a model was trained on, found from the shard files it read.

A curation run writes its shards to ``OUT/shards/`` beside ``OUT/catalog.duckdb``,
``OUT/run.yaml`` and ``OUT/stats.json``; a model folder's ``training.json`` lists the shard
files the diffusion job read. Model cards and the memorization check both start here, so
they describe exactly the samples the model saw: shards of a run that training did not
read are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.catalog import CATALOG
from curate.config import RunConfig, load_yaml, validate

RUN_CONFIG = "run.yaml"


@dataclass(frozen=True)
class CurationRun:
    out: Path  # the run folder
    shards: tuple[str, ...]  # names (shard-00000) of its shards the model was trained on

    def config(self) -> RunConfig:
        """The run's resolved pipeline, as curation wrote it."""
        path = self.out / RUN_CONFIG
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; {self.out} is not a finished curation run")
        return validate(RunConfig, load_yaml(path), path)

    def query(self, sql: str, parameters: list[Any] | None = None) -> list[tuple]:
        import duckdb

        con = duckdb.connect(str(self.out / CATALOG), read_only=True)
        try:
            return con.execute(sql, parameters or []).fetchall()
        finally:
            con.close()


def curation_runs(training: dict[str, Any]) -> list[CurationRun]:
    """The runs behind a model's training.json ``shards``, in first-seen order."""
    by_run: dict[Path, list[str]] = {}
    for url in training["shards"]:
        if "://" in url and not url.startswith("file://"):
            raise ValueError(f"shard {url}: not a local file; the curation run behind remote shards cannot be read "
                             f"here (copy the run folder and its catalog locally)")
        shard = Path(url.removeprefix("file://"))
        out = shard.parent.parent
        if not (out / CATALOG).is_file():
            raise FileNotFoundError(f"shard {shard}: no {CATALOG} in {out}; the model was trained on shards that "
                                    f"are not inside a curation run folder (OUT/shards/)")
        by_run.setdefault(out, []).append(shard.name.removesuffix(".tar"))
    return [CurationRun(out, tuple(names)) for out, names in by_run.items()]
