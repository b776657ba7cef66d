"""A filter and a captioner defined outside the package: one class and one registration reach the whole run.

The filter and the captioner below live in this test module only. Named in a pipeline, they run on
local Ray; the filter's reason is accepted in the run manifest, stats count it under its own stage,
and the model card's curation section describes it; the captioner's captions reach the shards and the
card names it. No module of the package knows them.
"""

from __future__ import annotations

import io
import sys
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray.cloudpickle
import yaml
from PIL import Image
from pydantic import BaseModel, ConfigDict

from audit.card import caption_lines, filter_lines, read_run
from audit.provenance import CurationRun
from curate import stages
from curate.captioners import config as captioners, text as captext
from curate.localserve import serve
from curate.runfolder import RunFolder


class MinAreaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_pixels: int


class MinArea(stages.Filter):
    name = "min_area"
    reasons = {"small_area": "fewer pixels than min_pixels"}
    Config = MinAreaSettings

    def decide(self, row: dict[str, Any]) -> tuple[str, str] | None:
        area = row["original_width"] * row["original_height"]
        if area < self.config.min_pixels:
            return "small_area", f"{area} pixels < {self.config.min_pixels}"
        return None

    def describe(self) -> str:
        return f"Area: at least {self.config.min_pixels} pixels."


class PlainSettings(captioners.CaptionerSettings):
    kind: str = "plain"
    word: str

    def describe(self) -> str:
        return f"plain:{self.word}"


class PlainCaptioner:
    """Captions every pending record with one word: a stand-in for another captioning model."""

    kind = "plain"
    Settings = PlainSettings

    def __init__(self, config: captioners.CaptionConfig):
        self.word = config.captioner.word

    def __call__(self, table: pa.Table) -> pa.Table:
        rows = table.to_pylist()
        for row in rows:
            if row["status"] == "pending":
                made = [captext.entry(f"a picture of {self.word}", "model", model="plain")]
                row[captext.COLUMN] = captext.dump(made)
        return pa.Table.from_pylist(rows, schema=captext.with_column(table.schema))


@pytest.fixture
def min_area():
    """MinArea and PlainCaptioner registered for one test; the shared registries are as before
    afterwards, so no other test's run counts a min_area stage."""
    live = (stages.FILTERS, stages.DECLARED, stages._STAGE_OF_REASON, captioners.CAPTIONERS)
    saved = [dict(d) for d in live]
    captioners.register_captioner(PlainCaptioner)
    yield stages.register(MinArea)
    for registry, before in zip(live, saved):
        registry.clear()
        registry.update(before)


def write_folder(folder, sizes: dict[str, tuple[int, int]]) -> None:
    folder.mkdir()
    for name, size in sizes.items():
        buffer = io.BytesIO()
        Image.new("RGB", size, (90, 140, 200)).save(buffer, "JPEG")
        (folder / name).write_bytes(buffer.getvalue())


def test_a_filter_registered_outside_the_package_reaches_manifest_stats_and_card(tmp_path, min_area):
    # Ray workers cannot import a test module: send the filter's class along by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    folder = tmp_path / "images"
    write_folder(folder, {"big.jpg": (500, 400), "small.jpg": (300, 300), "tiny.jpg": (40, 40)})
    with serve(folder) as url:
        manifest = tmp_path / "mine.yaml"
        manifest.write_text(yaml.safe_dump({"source": "mine", "name": "Mine", "adapter": "local",
                                            "metadata": [str(folder)],
                                            "options": {"license": "CC0-1.0", "base_url": url}}))
        pipeline = tmp_path / "pipeline.yaml"
        pipeline.write_text(yaml.safe_dump({
            "name": "custom", "sources": [{"manifest": str(manifest)}], "ray": {"num_cpus": 2},
            "filters": {"resolution": {"min_side": 64}, "min_area": {"min_pixels": 150000}},
            "captions": {"choose": ["model"], "captioner": {"kind": "plain", "word": "pear"}}}, sort_keys=False))
        from curate.run import run

        stats = run(pipeline, tmp_path / "out")

    folder = RunFolder.at(tmp_path / "out")
    fates = {r["source_id"]: (r["status"], r["reason"], r["detail"])
             for r in pq.read_table(folder.records).to_pylist()}
    assert fates["small.jpg"] == ("rejected", "small_area", "90000 pixels < 150000")
    assert fates["tiny.jpg"][:2] == ("rejected", "min_side")  # the filters ran in the pipeline's order
    assert fates["big.jpg"][:2] == ("kept", "")
    assert stats["by_stage"]["min_area"] == {"in": 2, "removed": 1, "out": 1,
                                             "fates": {"rejected:small_area": 1}}
    assert list(stats["by_stage"]).index("min_area") == list(stats["by_stage"]).index("resolution") + 1
    shards = tuple(p.stem for p in folder.shards.glob("*.tar"))
    facts = read_run(CurationRun(folder, shards), datetime.now(timezone.utc))
    assert "- Area: at least 150000 pixels." in filter_lines(facts)
    assert "- Resolution: shorter side at least 64 px, aspect ratio at most 3.0." in filter_lines(facts)
    kept, = [r for r in pq.read_table(folder.records).to_pylist() if r["status"] == "kept"]
    assert (kept["caption"], kept["caption_origin"]) == ("a picture of pear", "model")
    assert "- Model captioner: `plain:pear` (kind plain)." in caption_lines(facts)


def test_filters_are_found_by_name_or_import_path_and_their_reasons_are_their_own(min_area):
    from curate.score.resolution import Resolution

    assert stages.filter_class("resolution") is Resolution
    assert stages.filter_class("curate.score.resolution:Resolution") is Resolution
    with pytest.raises(ValueError, match="is not a curate.stages.Filter"):
        stages.filter_class("curate.records:make_key")
    with pytest.raises(Exception, match="unknown filter 'nope'"):
        stages.filter_class("nope")

    class Thief(MinArea):
        name = "thief"
        reasons = {"min_side": "a reason of the resolution stage"}

    with pytest.raises(ValueError, match="min_side belong to another stage"):
        stages.register(Thief)


def test_a_filter_that_raises_fails_that_record_only_unless_strict(min_area):
    from curate import records

    rows = [records.candidate("mine", "a", original_width=None, original_height=10),
            records.candidate("mine", "b", original_width=600, original_height=400)]
    out = MinArea({"min_pixels": 10})(records.to_table(rows)).to_pylist()
    assert (out[0]["status"], out[0]["reason"]) == ("failed", "stage_error")
    assert out[0]["stage"] == "min_area"
    assert out[0]["detail"].startswith("record mine-") and "TypeError" in out[0]["detail"]
    assert out[1]["status"] == "pending"
    with pytest.raises(TypeError):
        MinArea({"min_pixels": 10}, strict=True)(records.to_table(rows))
