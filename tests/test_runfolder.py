"""The run folder: a resumed run is compared field by field, a finished run stays finished."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from curate import records
from curate.config import ConfigError, resolve
from curate.io import write_parquet_atomic
from curate.runfolder import RunFolder, RunMismatch

PIPELINE = """\
name: t
sources:
  - manifest: {manifest}
shards:
  samples_per_shard: {per_shard}
ray:
  num_cpus: {cpus}
"""


def config(tmp_path: Path, per_shard: int = 8, cpus: int = 1, mode: str = "local"):
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    manifest = tmp_path / "mine.yaml"
    manifest.write_text(f"source: mine\nname: Mine\nadapter: local\nmetadata: [{folder}]\n")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(PIPELINE.format(manifest=manifest, per_shard=per_shard, cpus=cpus))
    resolved = resolve(pipeline, {"out": str(tmp_path / "out")})
    resolved.mode = mode
    return resolved


def test_a_new_run_writes_its_config_and_a_resumed_one_must_match(tmp_path):
    folder = RunFolder.at(tmp_path / "out")
    folder.claim(config(tmp_path))
    assert folder.config() == config(tmp_path)
    folder.claim(config(tmp_path))  # the same config resumes
    with pytest.raises(RunMismatch) as error:
        folder.claim(config(tmp_path, per_shard=4))
    assert "pipeline.shards.samples_per_shard: 8 -> 4" in str(error.value)
    assert str(folder.run_yaml) in str(error.value)


def test_runtime_settings_are_not_part_of_a_runs_identity(tmp_path):
    folder = RunFolder.at(tmp_path / "out")
    folder.claim(config(tmp_path))
    folder.claim(config(tmp_path, cpus=2, mode="cluster"))  # joining a cluster is the same run


def test_a_field_added_since_the_run_started_is_no_difference(tmp_path):
    folder = RunFolder.at(tmp_path / "out")
    folder.claim(config(tmp_path))
    written = yaml.safe_load(folder.run_yaml.read_text())
    del written["pipeline"]["dedup"]  # as a version without that section wrote it: today's defaults fill it
    folder.run_yaml.write_text(yaml.safe_dump(written))
    folder.claim(config(tmp_path))


def test_a_finished_run_of_an_older_schema_stays_a_finished_run(tmp_path, caplog):
    folder = RunFolder.at(tmp_path / "out")
    folder.claim(config(tmp_path))
    written = yaml.safe_load(folder.run_yaml.read_text())
    written["pipeline"]["retired_setting"] = True
    folder.run_yaml.write_text(yaml.safe_dump(written))
    with pytest.raises(ConfigError, match="retired_setting"):  # an unfinished run cannot be resumed safely
        folder.claim(config(tmp_path))
    folder.done_marker.write_text("")
    folder.claim(config(tmp_path))
    assert "the run is finished" in caplog.text


def test_finalize_writes_stats_with_models_then_done_and_keeps_models_when_run_again(tmp_path):
    folder = RunFolder.at(tmp_path / "out")
    folder.claim(config(tmp_path))
    rows = [records.finish(records.candidate("mine", "a.jpg"), records.REJECTED, "min_side", "10 < 256")]
    stats = folder.finalize(records.to_table(rows))
    assert folder.done and stats["records"] == 1 and stats["models"] == {}
    recorded = {**json.loads(folder.stats_file.read_text()), "models": {"aesthetic": "a model"}}
    folder.stats_file.write_text(json.dumps(recorded))
    write_parquet_atomic(records.to_table(rows * 0), folder.manifest)  # e.g. a revocation rewrote the records
    assert folder.finalize()["models"] == {"aesthetic": "a model"}
    assert folder.query("SELECT count(*) FROM records") == [(0,)]
