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

from curate.config import RunConfig
from curate.runfolder import RunFolder


@dataclass(frozen=True)
class CurationRun:
    folder: RunFolder
    shards: tuple[str, ...]  # names (shard-00000) of its shards the model was trained on

    @property
    def out(self) -> Path:
        return self.folder.root

    def config(self) -> RunConfig:
        """The run's resolved pipeline, as curation wrote it."""
        return self.folder.config()

    def query(self, sql: str, parameters: list[Any] | None = None) -> list[tuple]:
        return self.folder.query(sql, parameters)


def curation_runs(training: dict[str, Any]) -> list[CurationRun]:
    """The runs behind a model's training.json ``shards``, in first-seen order."""
    by_run: dict[Path, list[str]] = {}
    for url in training["shards"]:
        if "://" in url and not url.startswith("file://"):
            raise ValueError(f"shard {url}: not a local file; the curation run behind remote shards cannot be read "
                             f"here (copy the run folder and its catalog locally)")
        shard = Path(url.removeprefix("file://"))
        folder = RunFolder.at(shard.parent.parent)
        if not folder.catalog.is_file():
            raise FileNotFoundError(f"shard {shard}: no {folder.catalog.name} in {folder.root}; the model was trained "
                                    f"on shards that are not inside a curation run folder (OUT/shards/)")
        by_run.setdefault(folder.root, []).append(shard.name.removesuffix(".tar"))
    return [CurationRun(RunFolder(out), tuple(names)) for out, names in by_run.items()]
