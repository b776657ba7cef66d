"""The model card says what a user can check against the catalogs: counts over the trained shards,
the run's thresholds and models, the license file's restrictions, and warnings derived from the files.

Models trained on other shards are made by copying the demo model folder and rewriting the
``shards`` of its training.json. That is what training on those shards would leave for the card:
train.loop writes that list from the shard files the job opened, and the card reads which samples
the model saw from nothing else (the weights only give parameter counts).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from audit import card
from curate import catalog
from curate.optin import consent
from curate.optin.catalog import catalog_tables
from curate.optin.consent import Scope
from curate.optin.report import card_section
from curate.optin.store import Store
from curate.runfolder import RunFolder
from curate.describe import without_folders
from curate.score.clip import ClipSpec

RUN_FILES = ("catalog.duckdb", "run.yaml", "stats.json", "records", "shards")


@pytest.fixture(scope="module")
def demo_card(demo_model: Path) -> str:
    return card.render(demo_model)


def trained_shards(model: Path) -> list[str]:
    return [Path(url).name.removesuffix(".tar") for url in json.loads((model / "training.json").read_text())["shards"]]


def catalog_counts(out: Path, shards: list[str]) -> dict[str, int]:
    """Samples per source in `shards`, counted by DuckDB itself."""
    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    try:
        return dict(con.execute("SELECT source, count(*) FROM samples WHERE list_contains(?, shard) GROUP BY 1",
                                [shards]).fetchall())
    finally:
        con.close()


def card_counts(text: str) -> dict[str, int]:
    """The source table of a card: source id -> images."""
    return {source: int(n) for source, n in re.findall(r"^\| [^|]* \(`(\w+)`\) \| (\d+) \|", text, re.M)}


def copy_run(out: Path, dest: Path) -> Path:
    """The files of a finished run a card reads, without the demo corpus and the work folders."""
    dest.mkdir(parents=True)
    for name in RUN_FILES:
        (shutil.copytree if (out / name).is_dir() else shutil.copy2)(out / name, dest / name)
    return dest


def copy_model(model: Path, dest: Path, shard_files: list[Path]) -> Path:
    shutil.copytree(model, dest)
    record = json.loads((dest / "training.json").read_text())
    (dest / "training.json").write_text(json.dumps(record | {"shards": [str(p) for p in shard_files]}))
    return dest


def section(text: str, heading: str) -> str:
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_source_counts_are_duckdb_counts_over_the_trained_shards(demo_card, demo_model, demo_out):
    expected = catalog_counts(demo_out, trained_shards(demo_model))
    assert card_counts(demo_card) == expected
    assert f"| **total** | **{sum(expected.values())}** |" in demo_card


def test_a_model_trained_on_some_shards_counts_only_those(demo_model, demo_out, tmp_path):
    shards = sorted((demo_out / "shards").glob("*.tar"))[:2]
    text = card.render(copy_model(demo_model, tmp_path / "model", shards))
    expected = catalog_counts(demo_out, [p.name.removesuffix(".tar") for p in shards])
    assert card_counts(text) == expected
    assert sum(expected.values()) < sum(catalog_counts(demo_out, trained_shards(demo_model)).values())
    assert "over the 2 shard files" in text
    assert "- Autoencoder: trained on other shard files" in text  # its own training.json still lists all four


def test_thresholds_and_model_names_come_from_run_yaml_and_stats(demo_card, demo_out):
    pipeline = yaml.safe_load((demo_out / "run.yaml").read_text())["pipeline"]
    stats = json.loads((demo_out / "stats.json").read_text())
    scoring, captions = pipeline["scoring"], pipeline["captions"]
    for expected in (f"shorter side at least {pipeline['filters']['resolution']['min_side']} px",
                     f"rejected at score <= {scoring['aesthetic']['min_score']}",
                     f"rejected at p(watermark) >= {scoring['watermark']['max_pwatermark']}",
                     f"rejected at p(nsfw) >= {scoring['nsfw']['max_pnsfw']}",
                     f"pHash within {pipeline['dedup']['near']['phash']['max_distance']} of 64 bits",
                     f"CLIP cosine above {pipeline['dedup']['near']['clip']['threshold']}",
                     f"threshold {captions['similarity']['threshold']} with",
                     f"`{ClipSpec(**captions['captioner']['model']).describe()}`",
                     *(f"`{without_folders(model)}`" for model in stats["models"].values())):
        assert expected in demo_card
    rows = re.findall(r"^\| (\w+) \| ([\w:]+) \| (\d+) \|$", section(demo_card, "Curation"), re.M)
    for fate, n in stats["by_fate"].items():  # a fate two stages give (license_conflict) has a row in each
        if fate != "kept":
            assert sum(int(count) for _, f, count in rows if f == fate) == n, fate
    assert {stage for stage, _, _ in rows} <= set(stats["by_stage"])


def test_the_card_has_hub_metadata_a_usage_snippet_and_no_local_paths(demo_card, demo_model, demo_out):
    front, body = demo_card.removeprefix("---\n").split("\n---\n", 1)
    meta = yaml.safe_load(front)
    assert (meta["license"], meta["license_link"], meta["pipeline_tag"], meta["library_name"]) == (
        "other", card.LICENSE_FILE, "text-to-image", "diffusers")
    assert "base_model" not in meta and "trained-from-scratch" in meta["tags"]
    assert "StableDiffusionPipeline.from_pretrained(" in section(body, "Usage")
    assert f"`{demo_out.name}/DATASET_CARD.md`" in section(body, "Usage")
    for local in {str(demo_out), str(demo_model), str(Path.home()), str(demo_out.parents[1])}:
        assert local not in demo_card


def test_license_section_lists_the_license_files_restrictions(demo_card):
    text = card.MODEL_LICENSE.read_text()
    attachment = text.split("## Attachment A", 1)[1]
    listed = re.findall(r"^\d+\. (.*)$", section(demo_card, "License"), re.M)
    assert listed == re.findall(r"^\d+\. (.*)$", attachment, re.M)
    assert text.splitlines()[0].removeprefix("# ") in demo_card


def test_read_license_joins_wrapped_items_and_needs_an_attachment(tmp_path):
    path = tmp_path / "license.md"
    path.write_text("# Some license\n\n## Attachment A\n\n1. Not to do this,\n   nor that.\n2. Nor the other.\n")
    assert card.read_license(path).restrictions == ["Not to do this, nor that.", "Nor the other."]
    path.write_text("# Some license\n\nNo restrictions at all.\n")
    with pytest.raises(ValueError, match="Attachment A"):
        card.read_license(path)


def test_random_init_text_encoder_is_a_warning_that_follows_conditioning_json(demo_card, demo_model, demo_out,
                                                                              tmp_path):
    assert demo_card.index("> **Warning:** The conditioning encoder") < demo_card.index("## Model")
    assert "random-initialised" in section(demo_card, "Model")
    model = copy_model(demo_model, tmp_path / "model", sorted((demo_out / "shards").glob("*.tar")))
    settings = json.loads((model / "conditioning" / "conditioning.json").read_text())
    (model / "conditioning" / "conditioning.json").write_text(json.dumps(settings | {"pretrained": "openai"}))
    text = card.render(model)
    assert "> **Warning:**" not in text
    assert "pretrained `openai`" in text and "was trained by others" in text


def test_shards_outside_a_curation_run_are_a_clear_error(demo_model, tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    model = copy_model(demo_model, tmp_path / "model", [loose / "shard-00000.tar"])
    with pytest.raises(FileNotFoundError, match="not inside a curation run folder"):
        card.render(model)


def test_the_card_follows_the_catalog(demo_model, demo_out, tmp_path):
    out = copy_run(demo_out, tmp_path / "run")
    model = copy_model(demo_model, tmp_path / "model", sorted((out / "shards").glob("*.tar")))
    before = card.render(model)
    con = duckdb.connect(str(out / "catalog.duckdb"))
    con.execute("UPDATE samples SET license = 'CC-BY-4.0' WHERE source = 'met'")
    con.execute("DELETE FROM samples WHERE key IN (SELECT key FROM samples WHERE source = 'commons' LIMIT 2)")
    con.close()
    after = card.render(model)
    met = catalog_counts(out, trained_shards(model))["met"]
    assert card_counts(after) == catalog_counts(out, trained_shards(model)) != card_counts(before)
    assert "[Creative Commons Attribution 4.0 International](https://creativecommons.org/licenses/by/4.0/)" in after
    assert f"- Attribution: {met} of {sum(card_counts(after).values())} images require it" in after


def optin_run(demo_out: Path, dest: Path) -> tuple[Path, list[str]]:
    """A copy of the demo run in which three kept samples are opt-in contributions: two consents of one
    contributor (models may be released) and one of another (they may not). Shards and records are
    edited and the catalog rebuilt by curate, so its opt-in tables are the store's own."""
    out = copy_run(demo_out, dest / "run")
    store = Store(dest / "optin", create=True)
    people = [store.register(name, f"{name}@example.invalid", "web", with_token=False)[0] for name in ("a", "b")]
    scopes = {release: Scope(training=True, model_release=release, credit=True) for release in (True, False)}
    consents = [store.add_consent(person.contributor_id, consent.current(), scopes[release], {})
                for person, release in ((people[0], True), (people[0], True), (people[1], False))]
    samples = pq.read_table(out / "shards" / "shard-00000.parquet").to_pylist()
    chosen = {row["key"]: c for row, c in zip(samples, consents)}
    for path in [*(out / "shards").glob("*.parquet"), out / "records" / "records.parquet"]:
        table = pq.read_table(path)
        rows = table.to_pylist()
        for row in rows:
            if row["key"] in chosen:
                row.update(license="opt-in", consent_id=chosen[row["key"]].consent_id)
                if "license_value" in row:  # the records' consent evidence, which curate's opt-in paragraph reads
                    release = bool(chosen[row["key"]].scope_model_release)
                    row["license_value"] = consent.evidence_value(consent.current().version, scopes[release])
        pq.write_table(type(table).from_pylist(rows, schema=table.schema), path)
    run_yaml = yaml.safe_load((out / "run.yaml").read_text())
    run_yaml["sources"].append(run_yaml["sources"][0] | {"source": "optin", "name": "Opt-in", "adapter": "optin",
                                                         "metadata": [str(store.root)]})
    (out / "run.yaml").write_text(yaml.safe_dump(run_yaml))
    assert "optin_consents" in catalog_tables(store)
    catalog.build(out)
    return out, list(chosen)


def test_optin_contributors_release_scope_and_late_revocations(demo_model, demo_out, tmp_path):
    out, keys = optin_run(demo_out, tmp_path)
    model = copy_model(demo_model, tmp_path / "model", sorted((out / "shards").glob("*.tar")))
    finished = datetime.fromisoformat(json.loads((model / "training.json").read_text())["finished_at"])
    RunFolder(out).revocations.write_text(json.dumps({
        "applied_at": (finished + timedelta(days=1)).isoformat(), "revocation_ids": ["rev-1"], "records_revoked": 1,
        "samples_removed": 1, "shards_rewritten": ["shard-00000"], "shards_removed": []}) + "\n")
    text = card.render(model)
    assert f"- Opt-in: {len(keys)} images from 2 contributors ({len(keys)} consent records)." in text
    assert "> **Warning:** 1 training image came from contributors who did not permit releasing models" in text
    assert card_section(out, finished).strip() in text
    assert "After training, 1 sample the model was trained on left the shards" in text


def test_cli_writes_the_card_atomically_where_asked(demo_model, demo_card, tmp_path):
    parser = argparse.ArgumentParser(prog="cleanroom")
    card.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["model-card", str(demo_model), "--out", str(tmp_path / "cards" / "MODEL_CARD.md")])
    assert args.handler(args) == 0
    assert (tmp_path / "cards" / "MODEL_CARD.md").read_text() == demo_card
    # the sample grid the card links beside it, and no temp file left behind
    assert sorted(p.name for p in (tmp_path / "cards").iterdir()) == ["MODEL_CARD.md", "samples.png"]
