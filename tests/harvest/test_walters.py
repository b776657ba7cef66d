"""Walters: the API's object pages with the key from the environment, resumable, read through the adapter."""

from __future__ import annotations

from curate import records, verdict
from curate.config import MANIFESTS_DIR, load_manifest
from curate.harvest.pull import pull
from curate.licenses import Policy
from curate.sources import walters

from .apis import APIS, KEY, KEY_ENV
from .conftest import FakeTime, RecordedAPI, fake_client, settings


def run(server, out, **changes):
    harvest = settings(server.url + "/v1", api_key_env=KEY_ENV, **changes)
    return pull("walters", "walters", harvest, out, client=fake_client(harvest, FakeTime()))


def test_pages_carry_the_key_the_title_query_and_page_size_and_the_key_is_written_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    api = APIS["walters"]()
    with RecordedAPI(api.route) as server:
        harvest = settings(server.url + "/v1", api_key_env=KEY_ENV, page_size=4)
        summary = pull("walters", "walters", harvest, tmp_path / "out", query="Camel",
                       client=fake_client(harvest, FakeTime()))
    assert summary.complete and summary.records == len(api.records)
    assert [(s.path, s.params["Page"], s.params["pageSize"]) for s in server.seen] == [
        ("/v1/objects", "1", "4"), ("/v1/objects", "2", "4"), ("/v1/objects", "3", "4")]
    assert all(s.params["apikey"] == KEY and s.params["Title"] == "Camel" for s in server.seen)
    written = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert KEY.encode() not in written and b"apikey=%2A%2A%2A" in written


def test_the_harvest_reads_through_the_adapter_with_the_manifests_terms(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    api = APIS["walters"]()
    with RecordedAPI(api.route) as server:
        run(server, tmp_path / "out")
    options = load_manifest(MANIFESTS_DIR / "walters.yaml").options
    harvested = list(walters.read(tmp_path / "out" / "objects.jsonl", "walters", options))
    rows = verdict.apply_policy(records.to_table(harvested), Policy.default()).to_pylist()
    assert [(r["source_id"], r["status"], r["reason"], r["license"]) for r in rows] == [
        ("1", "rejected", "license_not_allowed", "all-rights-reserved"),
        ("2", "pending", "", "CC0-1.0"), ("37626", "pending", "", "CC0-1.0"), ("7363", "pending", "", "CC0-1.0"),
        ("37211", "pending", "", "CC0-1.0"), ("54321", "rejected", "no_image", "CC0-1.0"),
        (None, "rejected", "malformed_record", None), ("23074", "pending", "", "CC0-1.0")]
