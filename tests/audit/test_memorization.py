"""The memorization check on the demo run and the tiny model trained on its shards.

"Generated samples" here are exact copies of training images (saved as PNG, as
``cleanroom sample`` writes) and a few pictures unlike anything in the demo corpus.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image, PngImagePlugin

from audit import memorization
from curate.catalog import query
from curate.config import ConfigError
from curate.runfolder import EMBEDDINGS, RunFolder
from curate.score import store
from train.generate import PARTS
from train.loop import TRAINING_RECORD

# The demo's CLIP is random: under it distinct pictures reach cosine 0.998 (the demo near-dedups
# at 0.999, so kept samples are at most that close to each other), while an exact copy differs
# from its stored embedding only by float16 rounding (about 1e-4). 0.9995 separates the two.
THRESHOLD = 0.9995
INFOTEXT = ("a study of colour\nNegative prompt: blurry\n"
            "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 3, Size: 64x64, Model: test")


@dataclass
class Checked:
    summary: memorization.Summary
    out: Path
    samples: Path
    copies: dict[str, str]  # sample file name -> the training key it copies
    unrelated: list[str]  # sample file names


def trained_keys(run: Path, shards: list[str]) -> list[tuple[str, str]]:
    """(key, shard) of the samples in ``shards`` of a run, in key order."""
    names = ", ".join(f"'{s}'" for s in shards)
    table = query(run, f"SELECT key, shard FROM samples WHERE shard IN ({names}) ORDER BY key")
    return list(zip(table["key"].to_pylist(), table["shard"].to_pylist()))


def training_image(run: Path, shard: str, key: str) -> Image.Image:
    with tarfile.open(run / "shards" / f"{shard}.tar") as tar:
        return Image.open(io.BytesIO(tar.extractfile(f"{key}.jpg").read())).convert("RGB")


def save_png(picture: Image.Image, path: Path, parameters: str | None = None) -> Path:
    info = PngImagePlugin.PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    picture.save(path, format="PNG", pnginfo=info)
    return path


def unrelated_pictures(folder: Path) -> list[str]:
    """Pictures unlike the demo corpus's smooth colour fields: pixel noise and one flat colour."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    save_png(Image.fromarray(noise), folder / "noise.png")
    save_png(Image.new("RGB", (64, 64), (20, 200, 40)), folder / "flat.png")
    return ["noise.png", "flat.png"]


def model_reading(model: Path, folder: Path, shards: list[str]) -> Path:
    """A model folder like ``model`` (linked) whose training.json lists ``shards`` instead."""
    folder.mkdir(parents=True)
    for part in PARTS:
        if part != TRAINING_RECORD:
            (folder / part).symlink_to(model / part)
    training = json.loads((model / TRAINING_RECORD).read_text())
    (folder / TRAINING_RECORD).write_text(json.dumps({**training, "shards": shards}))
    return folder


def linked_run(run: Path, folder: Path, scoring: dict | None | str = "same", embeddings: bool = True) -> Path:
    """A curation run folder sharing ``run``'s catalog and shards, with its own run.yaml."""
    folder.mkdir(parents=True)
    for name in ("catalog.duckdb", "shards", *([EMBEDDINGS] if embeddings else [])):
        (folder / name).symlink_to(run / name)
    config = yaml.safe_load((run / "run.yaml").read_text())
    if scoring != "same":
        config["pipeline"]["scoring"] = scoring
    if scoring is None:  # a run without scoring has no near dedup either (it reads scoring's hashes)
        config["pipeline"]["dedup"]["near"] = {"phash": None, "clip": None}
    (folder / "run.yaml").write_text(yaml.safe_dump(config))
    return folder


def shard_files(run: Path, names: list[str]) -> list[str]:
    return [str(run / "shards" / f"{name}.tar") for name in names]


@pytest.fixture(scope="module")
def checked(demo_model: Path, demo_out: Path, tmp_path_factory) -> Checked:
    folder = tmp_path_factory.mktemp("samples")
    copies = {}
    for number, shard in enumerate(["shard-00000", "shard-00001", "shard-00002"]):
        key = trained_keys(demo_out, [shard])[0][0]
        name = f"copy-{number}.png"
        save_png(training_image(demo_out, shard, key), folder / name, INFOTEXT if number == 0 else None)
        copies[name] = key
    unrelated = unrelated_pictures(folder)
    out = tmp_path_factory.mktemp("check")
    summary = memorization.check(demo_model, folder, out, threshold=THRESHOLD, k=3)
    return Checked(summary, out, folder, copies, unrelated)


def nearest_rows(out: Path) -> dict[str, list[dict]]:
    """Rows of memorization.parquet by sample file name, in rank order."""
    rows: dict[str, list[dict]] = {}
    for row in pq.read_table(out / memorization.PARQUET).to_pylist():
        rows.setdefault(Path(row["sample"]).name, []).append(row)
    return {name: sorted(found, key=lambda r: r["rank"]) for name, found in rows.items()}


def test_copies_of_training_images_are_flagged_with_their_own_key(checked: Checked):
    rows = nearest_rows(checked.out)
    for name, key in checked.copies.items():
        best = rows[name][0]
        assert best["key"] == key and best["flagged"]
        assert best["similarity"] == pytest.approx(1.0, abs=1e-3)
        assert [r["rank"] for r in rows[name]] == [1, 2, 3]
        assert not any(r["flagged"] for r in rows[name][1:])  # other training images stay below the threshold


def test_unrelated_pictures_are_not_flagged(checked: Checked):
    rows = nearest_rows(checked.out)
    for name in checked.unrelated:
        assert len(rows[name]) == 3
        assert not any(r["flagged"] for r in rows[name])
        assert max(r["similarity"] for r in rows[name]) < THRESHOLD


def test_rows_carry_prompt_seed_and_provenance(checked: Checked, demo_out: Path):
    rows = nearest_rows(checked.out)
    assert (rows["copy-0.png"][0]["prompt"], rows["copy-0.png"][0]["seed"]) == ("a study of colour", 3)
    assert (rows["noise.png"][0]["prompt"], rows["noise.png"][0]["seed"]) == ("", None)
    best = rows["copy-1.png"][0]
    record = query(demo_out, f"SELECT source, license, title, shard FROM samples WHERE key = '{best['key']}'")
    assert {c: best[c] for c in ("source", "license", "title", "shard")} == record.to_pylist()[0]
    assert best["run"] == str(demo_out)


def test_summary_counts_match_the_table_and_the_catalog(checked: Checked, demo_out: Path, demo_model: Path):
    summary = json.loads((checked.out / memorization.SUMMARY).read_text())
    table = pq.read_table(checked.out / memorization.PARQUET).to_pylist()
    trained = [Path(s).stem for s in json.loads((demo_model / TRAINING_RECORD).read_text())["shards"]]
    assert summary["samples"] == len(checked.copies) + len(checked.unrelated) == len({r["sample"] for r in table})
    assert summary["training_images"] == len(trained_keys(demo_out, trained))
    assert summary["missing_embeddings"] == 0
    assert summary["flagged"] == len(checked.copies)
    assert summary["flagged_pairs"] == sum(r["flagged"] for r in table)
    assert summary["max_similarity"] == pytest.approx(max(r["similarity"] for r in table))
    assert (summary["embedder"], summary["pretrained"], summary["threshold"]) == (
        "cleanroom-tiny-clip", None, THRESHOLD)
    assert summary["random_init"] and "random-initialised" in summary["note"]
    assert summary == memorization.asdict(checked.summary)


def test_html_shows_thumbnails_that_exist_and_marks_flagged_rows(checked: Checked):
    page = (checked.out / memorization.HTML).read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 5 * (1 + 3)  # each sample and its three nearest
    assert all(not Path(s).is_absolute() and (checked.out / s).is_file() for s in sources)
    assert page.count('<tr class="flagged-row">') == len(checked.copies)
    assert page.count('<td class="flagged">') == len(checked.copies)
    assert "random-initialised" in page
    for key in checked.copies.values():
        assert key in page


def test_a_shard_training_did_not_read_holds_no_candidates(demo_model: Path, demo_out: Path, tmp_path: Path):
    read = ["shard-00000", "shard-00002"]
    restricted = model_reading(demo_model, tmp_path / "model", shard_files(demo_out, read))
    key, shard = trained_keys(demo_out, ["shard-00001"])[0]
    sample = save_png(training_image(demo_out, shard, key), tmp_path / "unread.png")
    summary = memorization.check(restricted, [sample], tmp_path / "check", threshold=THRESHOLD, k=3)
    rows = pq.read_table(tmp_path / "check" / memorization.PARQUET).to_pylist()
    assert summary.training_images == len(trained_keys(demo_out, read))
    assert key not in {r["key"] for r in rows}
    assert {r["shard"] for r in rows} <= set(read)
    assert summary.flagged == 0


def test_trained_samples_without_an_embedding_are_counted(demo_model: Path, demo_out: Path, tmp_path: Path):
    run = linked_run(demo_out, tmp_path / "run", embeddings=False)
    keys = [key for key, _ in trained_keys(demo_out, ["shard-00000"])]
    kept = store.load(RunFolder(demo_out).embeddings, keys[2:])
    store.write_part(RunFolder(run).embeddings, kept.keys, kept.vectors)
    restricted = model_reading(demo_model, tmp_path / "model", shard_files(run, ["shard-00000"]))
    sample = save_png(Image.new("RGB", (32, 32), (200, 30, 30)), tmp_path / "red.png")
    summary = memorization.check(restricted, sample, tmp_path / "check", threshold=THRESHOLD, k=2)
    assert (summary.training_images, summary.missing_embeddings) == (len(keys) - 2, 2)
    assert summary.runs[0]["missing_examples"] == keys[:2]
    assert "2 trained samples have no stored embedding" in (tmp_path / "check" / memorization.HTML).read_text()


def test_a_run_without_embeddings_names_the_run_and_the_setting(demo_model: Path, demo_out: Path, tmp_path: Path):
    run = linked_run(demo_out, tmp_path / "run", scoring=None)
    restricted = model_reading(demo_model, tmp_path / "model", shard_files(run, ["shard-00000"]))
    sample = save_png(Image.new("RGB", (8, 8)), tmp_path / "sample.png")
    with pytest.raises(ConfigError, match=r"pipeline\.scoring\.clip is not set") as error:
        memorization.check(restricted, sample, tmp_path / "check")
    assert str(run) in str(error.value)


def test_runs_embedded_by_different_models_are_refused(demo_model: Path, demo_out: Path, tmp_path: Path):
    config = yaml.safe_load((demo_out / "run.yaml").read_text())["pipeline"]["scoring"]
    other = linked_run(demo_out, tmp_path / "other", scoring={**config, "clip": {"model": "ViT-B-32",
                                                                                   "pretrained": "openai"}})
    restricted = model_reading(demo_model, tmp_path / "model",
                               shard_files(demo_out, ["shard-00000"]) + shard_files(other, ["shard-00001"]))
    sample = save_png(Image.new("RGB", (8, 8)), tmp_path / "sample.png")
    with pytest.raises(ConfigError, match="different models") as error:
        memorization.check(restricted, sample, tmp_path / "check")
    assert "open_clip:ViT-B-32/openai" in str(error.value) and "cleanroom-tiny-clip/random-init" in str(error.value)


def test_sample_files_expand_folders_once_and_name_what_is_missing(tmp_path: Path):
    save_png(Image.new("RGB", (8, 8)), tmp_path / "b.png")
    save_png(Image.new("RGB", (8, 8)), tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert memorization.sample_files([tmp_path, tmp_path / "a.png"]) == [tmp_path / "a.png", tmp_path / "b.png"]
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        memorization.sample_files([tmp_path / "nowhere.png"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no sample images"):
        memorization.sample_files(empty)


def test_a_sample_folder_is_its_samples_not_its_grid(demo_model: Path, tmp_path: Path):
    from curate.cli import main

    out = tmp_path / "samples"
    assert main(["sample", str(demo_model), "--prompt", "a landscape", "--images-per-prompt", "2", "--steps", "2",
                 "--out", str(out)]) == 0
    assert (out / "grid.png").is_file()
    assert memorization.sample_files(out) == [out / "00000-0.png", out / "00001-1.png"]


def test_command_line_prints_the_summary(checked: Checked, demo_model: Path, tmp_path: Path, capsys):
    parser = argparse.ArgumentParser(prog="cleanroom")
    memorization.register(parser.add_subparsers(dest="command", required=True))
    samples = [str(checked.samples / name) for name in ("copy-1.png", "flat.png")]
    args = parser.parse_args(["memorization", str(demo_model), "--samples", *samples, "--out", str(tmp_path / "o"),
                              "--threshold", str(THRESHOLD), "--k", "1"])
    assert args.handler(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["samples"], printed["flagged"], printed["k"]) == (2, 1, 1)
    assert printed["out"] == str((tmp_path / "o").resolve())
    with pytest.raises(SystemExit):
        parser.parse_args(["memorization", str(demo_model), "--samples", "x.png", "--out", "o", "--k", "0"])
