"""Revocation against a finished run: only the shards holding the contributor's samples are
rewritten, nothing of theirs remains, and every other sample stays byte-identical."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from curate import catalog, records, shards, stats
from curate.optin import report, submit
from curate.optin import revoke as revoke_module
from curate.optin.errors import OptinError
from curate.optin.layout import REVOKED
from curate.optin.options import SourceOptions
from curate.optin.revoke import revoke
from curate.runfolder import RunFolder
from curate.score import store as embedding_store

from .conftest import contributor, picture
from .runs import MODELS, build_run, members, museum_rows, optin_rows, vector

ANN_CAPTION = "Ann's cat on the windowsill"


@pytest.fixture
def scene(store, tmp_path):
    """Ann (to revoke) and Bob (stays) contributed; a museum source fills the other samples.

    shard-00000: Bob, museum, museum     -> untouched
    shard-00001: museum, Ann, museum     -> rewritten without Ann
    shard-00002: Ann, Ann                -> removed
    shard-00003: Bob, museum             -> untouched
    Ann's fourth image ended as a duplicate, in no shard.
    """
    ann = contributor(store, "Ann Example", "ann@example.org", credit=True)
    bob = contributor(store, "Bob", "bob@example.org", credit=False)
    for seed in (1, 2, 3, 4):
        submit.submit_bytes(store, ann.contributor_id, picture(seed), SourceOptions(), caption=ANN_CAPTION,
                            title=f"Cat {seed}")
    for seed in (5, 6):
        submit.submit_bytes(store, bob.contributor_id, picture(seed), SourceOptions(), title=f"Tree {seed}")
    museum, museum_images = museum_rows(5)
    optin, optin_images = optin_rows(store)
    consent_of = {store.active_consent(p.contributor_id).consent_id: p.display_name for p in (ann, bob)}
    by_person = {"Ann Example": [], "Bob": []}
    for row in optin:
        by_person[consent_of[row["consent_id"]]].append(row["key"])
    a, b, m = by_person["Ann Example"], by_person["Bob"], [r["key"] for r in museum]
    layout = {"shard-00000": [b[0], *m[:2]], "shard-00001": [m[2], a[0], m[3]], "shard-00002": a[1:3],
              "shard-00003": [b[1], m[4]]}
    out = tmp_path / "run"
    build_run(out, store, layout, museum + optin, {**museum_images, **optin_images}, duplicates=[a[3]])
    return {"out": out, "ann": ann, "bob": bob, "ann_keys": set(a), "layout": layout}


def power_cut(*_args) -> None:
    raise RuntimeError("power cut")


def index_matches_files(shards_dir: Path) -> bool:
    index = json.loads((shards_dir / shards.INDEX).read_text())
    return all(hashlib.sha256((shards_dir / s["tar"]).read_bytes()).hexdigest() == s["sha256"]
               for s in index["shards"])


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Relative path -> (bytes, modification time) of every file under ``root``."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_only_affected_shards_change_and_every_other_sample_is_byte_identical(store, scene):
    out, ann_keys = scene["out"], scene["ann_keys"]
    before_files, before = snapshot(out / "shards"), members(out / "shards")
    assert ann_keys & before.keys()
    assert ANN_CAPTION.encode() in b"".join(p.read_bytes() for p in (out / "shards").iterdir())

    revocation, (result,) = revoke(store, scene["ann"].contributor_id, {"channel": "test"}, [out])

    after = members(out / "shards")
    assert not ann_keys & after.keys()
    assert after == {k: v for k, v in before.items() if k not in ann_keys}  # byte for byte, member by member
    now_files = snapshot(out / "shards")
    for name in ("shard-00000", "shard-00003"):  # never opened for writing
        for suffix in (".tar", ".parquet"):
            assert now_files[name + suffix] == before_files[name + suffix]
    assert now_files["shard-00001.tar"][0] != before_files["shard-00001.tar"][0]
    assert "shard-00002.tar" not in now_files and "shard-00002.parquet" not in now_files
    index = json.loads((out / "shards" / shards.INDEX).read_text())
    assert [s["tar"] for s in index["shards"]] == ["shard-00000.tar", "shard-00001.tar", "shard-00003.tar"]
    assert index["samples"] == len(after) == 7 and index_matches_files(out / "shards")
    assert (result.samples_removed, result.records_revoked) == (3, 4)
    assert (result.shards_rewritten, result.shards_removed) == (["shard-00001"], ["shard-00002"])
    assert result.revocation_ids == [revocation.revocation_id]
    every_byte = b"".join(p.read_bytes() for p in (out / "shards").iterdir())
    for trace in (b"Ann Example", ANN_CAPTION.encode(), *(k.encode() for k in ann_keys)):
        assert trace not in every_byte


def test_a_rewritten_shard_is_the_shard_the_run_would_have_written_without_the_contributor(store, scene, tmp_path):
    out = scene["out"]
    revoke(store, scene["ann"].contributor_id, {"channel": "test"}, [out])
    kept = [r for r in pq.read_table(out / "records").to_pylist() if r["shard"] == "shard-00001"]
    images = {k: v["jpg"] for k, v in members(out / "shards").items() if k in {r["key"] for r in kept}}
    shards.write_shard(tmp_path / "fresh", "shard-00001", kept, images)
    assert (tmp_path / "fresh" / "shard-00001.tar").read_bytes() == (out / "shards" / "shard-00001.tar").read_bytes()
    assert pq.read_table(tmp_path / "fresh" / "shard-00001.parquet").equals(
        pq.read_table(out / "shards" / "shard-00001.parquet"))


def test_records_catalog_stats_work_files_and_logs_follow(store, scene):
    out, ann = scene["out"], scene["ann"]
    revocation, _ = revoke(store, ann.contributor_id, {"channel": "cli", "statement": "e-mail of 2026-11-21"},
                           [out])
    rows = {r["key"]: r for r in pq.read_table(out / "records").to_pylist()}
    for key in scene["ann_keys"]:
        row = rows[key]
        assert (row["status"], row["reason"]) == (records.REJECTED, REVOKED)
        assert all(row[f] is None for f in revoke_module.SCRUBBED)
        assert row["consent_id"] and row["license"] == "opt-in"  # still says what it was
    assert sum(1 for r in rows.values() if r["status"] == records.KEPT) == 7
    assert "was duplicate:exact_sha256" in " ".join(rows[k]["detail"] for k in scene["ann_keys"])
    fates = {r["fate"]: r["n"] for r in catalog.query(out, "SELECT fate, count(*) n FROM records "
                                                           "GROUP BY 1").to_pylist()}
    assert fates["rejected:revoked"] == 4 and fates["kept"] == 7
    assert catalog.query(out, "SELECT count(*) n FROM samples").to_pylist() == [{"n": 7}]
    assert json.loads((out / stats.STATS).read_text())["by_fate"]["rejected:revoked"] == 4
    for path in (out / "work").rglob("*.parquet"):  # fetched bytes and stage records are gone too
        table = pq.read_table(path)
        column = "key" if "key" in table.column_names else "record_key"
        assert not scene["ann_keys"] & set(table[column].to_pylist())
    (entry,) = RunFolder(out).revocation_log()
    assert entry["samples_removed"] == 3
    audit = store.audit_entries()
    assert [e["event"] for e in audit if e.get("contributor_id") == ann.contributor_id][-2:] == [
        "revoke", "delete_files"]
    (applied,) = [e for e in audit if e["event"] == "revoke_run"]
    assert applied["revocation_ids"] == [revocation.revocation_id] and applied["run"] == str(out.resolve())
    assert {s.status for s in store.submissions(ann.contributor_id)} == {"revoked"}
    assert {s.status for s in store.submissions(scene["bob"].contributor_id)} == {"active"}


def stored_rows(root: Path) -> dict[str, np.ndarray]:
    """Key -> vector of every row of the store, pairing each part's metadata with its npy by position."""
    metas = sorted((root / embedding_store.METADATA_DIR).glob("*.parquet"))
    assert len(metas) == len(list((root / embedding_store.VECTORS_DIR).glob("*.npy")))  # no part left half
    found = {}
    for meta in metas:
        keys = pq.read_table(meta)["key"].to_pylist()
        vectors = np.load(embedding_store.part_paths(root, meta.stem.removeprefix("metadata_"))[0])
        assert len(vectors) == len(keys)
        found.update(zip(keys, vectors))
    return found


def test_a_revoked_contributor_leaves_no_embedding_and_the_other_rows_still_pair(store, scene):
    out, ann_keys = scene["out"], scene["ann_keys"]
    root = RunFolder(out).embeddings
    before = stored_rows(root)
    assert len(ann_keys & before.keys()) == 4
    revoke(store, scene["ann"].contributor_id, {"channel": "test"}, [out])
    after = stored_rows(root)
    assert after.keys() == before.keys() - ann_keys
    assert all(np.array_equal(after[key], vector(key)) for key in after)
    assert not any(np.array_equal(v, vector(key)) for key in ann_keys for v in after.values())
    # Every reference, in the manifest and in the stage outputs, points at its own row.
    for path in [*(out / "records").glob("*.parquet"), *(out / "work").rglob("*.parquet")]:
        if embedding_store.FILE not in pq.read_schema(path).names:
            continue
        for row in pq.read_table(path).to_pylist():
            if row["key"] in ann_keys:
                assert row[embedding_store.FILE] is None and row[embedding_store.ROW] is None
            else:
                stored = np.load(root / row[embedding_store.FILE])[row[embedding_store.ROW]]
                assert np.array_equal(stored, vector(row["key"])), (path, row["key"])
    kept = catalog.query(out, "SELECT key FROM records WHERE status = 'kept'").to_pylist()
    assert embedding_store.load(root, [r["key"] for r in kept]).vectors.shape == (7, 8)  # dedup's `against` read


def test_stats_keep_the_models_that_scored_the_run(store, scene):
    out = scene["out"]
    revoke(store, scene["ann"].contributor_id, {"channel": "test"}, [out])
    revoked = json.loads((out / stats.STATS).read_text())
    assert revoked["models"] == MODELS and revoked["by_fate"]["rejected:revoked"] == 4


@pytest.mark.parametrize("module, step", [
    (shards, "write_index"),  # shards rewritten, index not yet
    (revoke_module, "_drop_from_work"),  # shards and index done, work files and records not
    (revoke_module, "_repoint"),  # new embedding parts written, references and old parts not
    (catalog, "build"),  # everything but the catalog and stats
])
def test_an_interrupted_revocation_is_finished_by_running_it_again(store, scene, monkeypatch, module, step):
    out = scene["out"]
    with monkeypatch.context() as patch:
        patch.setattr(module, step, power_cut)
        with pytest.raises(RuntimeError):
            revoke(store, scene["ann"].contributor_id, {"channel": "test"}, [out])
    _, (again,) = revoke(store, scene["ann"].contributor_id, {"channel": "test"}, [out])
    assert catalog.query(out, "SELECT count(*) n FROM records WHERE reason = 'revoked'").to_pylist() == [{"n": 4}]
    assert RunFolder(out).revocation_log() == [again.as_dict()]
    assert (again.records_revoked, again.samples_removed) == (4, 3)  # the whole pass, not the resumed part
    assert again.shards_removed == ["shard-00002"] and not (out / "shards" / "shard-00002.tar").exists()
    assert index_matches_files(out / "shards")
    assert not scene["ann_keys"] & set(embedding_store.load(RunFolder(out).embeddings).keys)
    settled = snapshot(out)
    _, (third,) = revoke(store, scene["ann"].contributor_id, {"channel": "test"}, [out])
    assert (third.pass_id, third.samples_removed, third.records_revoked) == (None, 0, 0)
    assert snapshot(out) == settled  # a clean run is left exactly as it is


def test_other_runs_and_unfinished_runs(store, scene, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    with pytest.raises(OptinError, match="not a finished run"):
        revoke(store, scene["ann"].contributor_id, {"channel": "test"}, [unfinished])
    # The store revocation stands even though the run could not be cleaned; applying it later works.
    assert store.revocation(scene["ann"].contributor_id)
    (result,) = revoke_module.apply(store, [scene["out"]])
    assert result.samples_removed == 3


def test_the_model_card_reports_the_revocation(store, scene):
    out = scene["out"]
    trained_at = datetime.now(timezone.utc) - timedelta(hours=1)
    before = report.card_section(out, trained_at)
    assert "4 samples come from opt-in contributors" not in before and "5 samples" in before  # 3 Ann + 2 Bob kept
    assert "revoked" not in before
    revoke(store, scene["ann"].contributor_id, {"channel": "test"}, [out])
    after = report.card_section(out, trained_at)
    assert "2 samples come from opt-in contributors" in after
    assert "4 records were revoked" in after and "3 samples were removed" in after
    assert "shard-00001" in after and "trained before 3 of those samples were removed" in after
    assert "trained before" not in report.card_section(out, datetime.now(timezone.utc) + timedelta(hours=1))


def test_catalog_reads_runs_whose_first_shard_has_no_opt_in_sample(store, tmp_path):
    ann = contributor(store, "Ann Example", "ann@example.org")
    submit.submit_bytes(store, ann.contributor_id, picture(1), SourceOptions())
    museum, museum_images = museum_rows(2)
    optin, optin_images = optin_rows(store)
    out = tmp_path / "run"
    # Keys sort by source name, so "commons-..." or "met-..." shards come before "optin-..." ones.
    build_run(out, store, {"shard-00000": [museum[0]["key"]], "shard-00001": [museum[1]["key"], optin[0]["key"]]},
              museum + optin, {**museum_images, **optin_images})
    _, (result,) = revoke(store, ann.contributor_id, {"channel": "test"}, [out])
    assert result.shards_rewritten == ["shard-00001"]


def test_a_resumed_pass_rewrites_an_index_left_behind_by_the_interrupted_one(store, tmp_path, monkeypatch):
    ann = contributor(store, "Ann Example", "ann@example.org")
    submit.submit_bytes(store, ann.contributor_id, picture(1), SourceOptions())
    museum, museum_images = museum_rows(1)
    optin, optin_images = optin_rows(store)
    out = tmp_path / "run"
    build_run(out, store, {"shard-00000": [optin[0]["key"], museum[0]["key"]]}, museum + optin,
              {**museum_images, **optin_images})
    with monkeypatch.context() as patch:
        patch.setattr(shards, "write_index", power_cut)
        with pytest.raises(RuntimeError):
            revoke(store, ann.contributor_id, {"channel": "test"}, [out])
    assert not index_matches_files(out / "shards")  # the shard is new, the index still the old one
    revoke(store, ann.contributor_id, {"channel": "test"}, [out])
    assert index_matches_files(out / "shards")


def test_the_model_card_flags_opt_in_records_without_a_consent_scope(store, tmp_path):
    museum, images = museum_rows(1)
    museum[0].update(license="opt-in", license_value="opted in")  # e.g. a local folder saying "opted in"
    out = tmp_path / "run"
    build_run(out, store, {"shard-00000": [museum[0]["key"]]}, museum, images)
    section = report.card_section(out)
    assert "1 samples come from opt-in contributors" in section and "1 of them carry no consent scope" in section
