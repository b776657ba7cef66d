"""The demo pipeline end to end on local Ray: what a data engineer sees in OUT."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

import curate.run as curate_run
from curate import licenses
from curate.cli import main
from curate.config import ConfigError
from curate.run import run
from curate.runfolder import DONE

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "pipelines" / "demo.yaml"


def manifest(out):
    return pq.read_table(out / "records").to_pylist()


def input_records(out):
    """Count the records the demo corpus offers, straight from its files."""
    corpus = out / "demo-corpus"
    met = [json.loads(line) for line in (corpus / "met/objects.jsonl").read_text().splitlines()[:-1]]
    met_images = sum(1 + len(o["additionalImages"]) if o["primaryImage"] else 1 for o in met) + 1  # + bad line
    commons = len((corpus / "commons/pages.jsonl").read_text().splitlines())
    local = len([p for p in (corpus / "local").iterdir() if p.suffix == ".jpg"])
    return met_images + commons + local


def test_every_input_record_appears_once_with_a_terminal_status(demo_out):
    rows = manifest(demo_out)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == input_records(demo_out)
    assert {r["status"] for r in rows} <= {"kept", "rejected", "duplicate", "failed"}
    assert all(r["reason"] or r["status"] == "kept" for r in rows)


def test_each_problem_in_the_corpus_gets_its_reason(demo_out):
    fates = {(r["status"], r["reason"]) for r in manifest(demo_out)}
    for fate in [("rejected", "license_not_allowed"), ("rejected", "license_unknown"), ("rejected", "no_image"),
                 ("rejected", "malformed_record"), ("failed", "download_http_404"), ("failed", "decode_error"),
                 ("rejected", "min_side"), ("rejected", "max_aspect_ratio"), ("duplicate", "exact_sha256"),
                 ("rejected", "site_disallowed"), ("duplicate", "near_duplicate_phash"),
                 ("duplicate", "near_duplicate_clip")]:
        assert fate in fates


def test_each_rights_case_in_the_corpus_gets_its_reason_evidence_and_stage(demo_out):
    rows = {int(r["source_id"]): r for r in manifest(demo_out) if r["source"] == "commons"}
    expected = {  # Commons page -> (status, reason, stage, evidence in the detail); see curate/demo.py
        208: ("rejected", "robots_disallowed", "robots_txt", "robots.txt disallows"),
        209: ("rejected", "tdm_reserved", "tdm_reservation", "tdmrep.json"),
        210: ("rejected", "tdm_reserved", "tdm_reservation", "tdm-reservation: 1 (tdm-policy http://127.0.0.1:"),
        211: ("rejected", "data_mining_prohibited", "embedded_rights", "DMI-PROHIBITED-AIMLTRAINING"),
        212: ("rejected", "ai_generated", "embedded_rights", "trainedAlgorithmicMedia"),
        213: ("rejected", "ai_generated", "embedded_rights", "C2PA manifest (signature not verified): c2pa.created"),
        214: ("rejected", "license_conflict", "embedded_rights", "embedded IPTC copyright notice"),
        215: ("kept", "", "shards", ""),  # a camera's capture: its metadata harms nothing
        216: ("rejected", "ai_generated", "embedded_rights", "AUTOMATIC1111"),
        217: ("rejected", "tdm_reserved", "tdm_reservation", "pages/reserved.html"),  # its page's meta element
    }
    found = {i: (rows[i]["status"], rows[i]["reason"], rows[i]["stage"]) for i in expected}
    assert found == {i: fate[:3] for i, fate in expected.items()}
    for i, (*_, evidence) in expected.items():
        assert evidence in (rows[i]["detail"] or ""), (i, rows[i]["detail"])
    stats = json.loads((demo_out / "stats.json").read_text())["by_stage"]
    assert stats["robots_txt"]["fates"] == {"rejected:robots_disallowed": 1}
    assert stats["tdm_reservation"]["fates"] == {"rejected:tdm_reserved": 3}
    # The license conflict the image's own copyright notice makes counts where it was found.
    assert stats["embedded_rights"]["fates"] == {"rejected:ai_generated": 3, "rejected:data_mining_prohibited": 1,
                                                 "rejected:license_conflict": 1}


def test_museum_cc0_copy_survives_the_commons_public_domain_copy(demo_out):
    rows = {r["key"]: r for r in manifest(demo_out)}
    commons_copy = next(r for r in rows.values() if r["source"] == "commons" and r["source_id"] == "204")
    assert commons_copy["status"] == "duplicate"
    kept = rows[commons_copy["duplicate_of"]]
    assert (kept["source"], kept["license"], kept["status"]) == ("met", "CC0-1.0", "kept")


def test_shards_hold_only_allowed_licenses_with_provenance(demo_out):
    policy = licenses.Policy.default()
    samples = list(wds.WebDataset(sorted(str(p) for p in (demo_out / "shards").glob("*.tar")), shardshuffle=False))
    kept = [r for r in manifest(demo_out) if r["status"] == "kept"]
    assert len(samples) == len(kept) > 0
    for sample in samples:
        meta = json.loads(sample["json"])
        assert policy.decide(meta["license"])[0]
        assert meta["license_evidence"]["field"] and meta["sha256"] and meta["url"].startswith("http://127.0.0.1")
        assert sample["txt"].decode() == (meta["caption"] or "")
        assert meta["key"] == sample["__key__"]
    index = json.loads((demo_out / "shards" / "index.json").read_text())
    assert index["samples"] == len(kept)


def test_ray_reads_the_shards(demo_out):
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        rows = ray.data.read_webdataset(str(demo_out / "shards"), file_extensions=["tar"], decoder=None).take_all()
    finally:
        ray.shutdown()
    assert len(rows) == sum(r["status"] == "kept" for r in manifest(demo_out))


def test_query_answers_license_counts(demo_out, capsys):
    assert main(["query", str(demo_out), "SELECT license, count(*) AS n FROM records GROUP BY 1 ORDER BY 1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "license\tn"
    assert any(line.startswith("CC0-1.0\t") for line in lines)


def test_near_duplicates_of_a_contribution_point_at_the_original(demo_out):
    rows = {r["source_id"]: r for r in manifest(demo_out) if r["source"] == "local"}
    original = rows["contribution-2.jpg"]
    assert original["status"] == "kept" and original["embedding_file"] and original["phash"]
    assert rows["contribution-2-small.jpg"]["duplicate_of"] == original["key"]
    assert rows["contribution-2-crop.jpg"]["duplicate_of"] == original["key"]


def test_template_syntax_in_a_title_and_creator_is_text_in_attribution_and_caption(demo_out):
    # The demo corpus names contribution-3 "Garden study 3 {title:*>50000000} {0} [x]", by
    # "Demo Contributor {title:>99999999999999999999} {creator}": the run finished, and shows them.
    row = next(r for r in manifest(demo_out) if r["source_id"] == "contribution-3.jpg")
    title = "Garden study 3 {title:*>50000000} {0} [x]"
    creator = "Demo Contributor {title:>99999999999999999999} {creator}"
    assert (row["status"], row["title"], row["creator"]) == ("kept", title, creator)
    assert row["attribution"] == f"{title} by {creator}, Creative Commons Zero 1.0 Universal"
    assert row["caption"] == f"{title}, by {creator}"


def test_scores_name_the_models_that_made_them(demo_out):
    stats = json.loads((demo_out / "stats.json").read_text())
    assert "cleanroom-tiny-clip" in json.dumps(stats["models"])
    kept = [r for r in manifest(demo_out) if r["status"] == "kept"]
    assert all(r["aesthetic"] is not None and r["pwatermark"] is not None for r in kept)


def test_stats_count_every_stage(demo_out):
    stats = json.loads((demo_out / "stats.json").read_text())
    assert stats["records"] == input_records(demo_out)
    assert stats["by_stage"]["ingest"]["in"] == stats["records"]
    assert stats["by_stage"]["shards"]["written"] == stats["kept"]
    assert sum(stats["by_fate"].values()) == stats["records"]


def test_rerunning_a_finished_run_changes_nothing(demo_out, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in demo_out.rglob("*") if p.is_file() and "demo-corpus" not in p.parts}

    def no_session(*args, **kwargs):
        raise AssertionError("a finished run started Ray")

    monkeypatch.setattr(curate_run, "ray_session", no_session)
    run(DEMO, demo_out)
    after = {p: p.stat().st_mtime_ns for p in demo_out.rglob("*") if p.is_file() and "demo-corpus" not in p.parts}
    assert before == after


def test_interrupted_run_resumes_without_losing_or_duplicating(tmp_path, demo_out, monkeypatch):
    """A run that dies inside a stage (after writing part of it) resumes from its finished stages."""
    out = tmp_path / "out"

    def dies_midway(self, into):
        (into / "part.parquet").write_bytes(b"half a file")
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(curate_run.Run, "assign", dies_midway)
        with pytest.raises(KeyboardInterrupt):
            run(DEMO, out)
    assert not (out / DONE).exists() and (out / "work" / "caption").exists()
    assert (out / "work" / "shards.partial" / "part.parquet").exists()

    run(DEMO, out)
    assert not (out / "work" / "shards.partial").exists()
    resumed = manifest(out)
    assert len({r["key"] for r in resumed}) == len(resumed) == input_records(out)
    # The corpus is generated from the same seed, so an uninterrupted run is the reference.
    fate = lambda rows: {r["key"]: (r["status"], r["reason"], r["shard"]) for r in rows}  # noqa: E731
    assert fate(resumed) == fate(manifest(demo_out))


def test_resuming_with_another_config_is_refused(tmp_path, demo_out):
    changed = tmp_path / "demo.yaml"
    changed.write_text(DEMO.read_text().replace("samples_per_shard: 8", "samples_per_shard: 4"))
    with pytest.raises(ConfigError, match="different config: pipeline.shards.samples_per_shard: 8 -> 4"):
        run(changed, demo_out)
