"""Getty: the activity stream page by page, each object once, deleted ones recorded, read through the adapter."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curate import cli, records, verdict
from curate.config import resolve
from curate.ingest import Ingest, work_items
from curate.harvest.pull import pull
from curate.licenses import Policy
from curate.sources import getty

from .apis import APIS
from .conftest import FakeTime, RecordedAPI, Reply, fake_client, jsonl, settings

ROOT = "/museum/collection"


def run(server, out, **changes):
    harvest = settings(server.url + ROOT, **changes)
    return pull("getty", "getty", harvest, out, client=fake_client(harvest, FakeTime()))


def test_each_object_is_asked_once_in_stream_order_and_nothing_else(tmp_path):
    api = APIS["getty"]()
    with RecordedAPI(api.route) as server:
        summary = run(server, tmp_path / "out")
    assert summary.complete and summary.failures == 0
    asked = [s.path for s in server.seen]
    pages = [p for p in asked if "/activity-stream/page/" in p]
    assert asked[0] == f"{ROOT}/activity-stream" and pages == [f"{ROOT}/activity-stream/page/{n}" for n in (1, 2, 3, 4)]
    objects = [p for p in asked if "/object/" in p]
    # The Update of the first object, the Delete and the Person ask for nothing; the stream's data.getty.edu
    # links were followed on the test server.
    assert objects == [o["id"].removeprefix("https://data.getty.edu") for o in api.records]
    assert [o["id"] for o in jsonl(tmp_path / "out" / "objects.jsonl")] == [o["id"] for o in api.records]


def test_an_object_deleted_since_its_create_is_a_failure_line_and_the_harvest_goes_on(tmp_path):
    api = APIS["getty"]()
    gone = api.records[3]["id"].removeprefix("https://data.getty.edu")

    def route(seen):
        return Reply.json({"error": "gone"}, status=410) if seen.path == gone else api.route(seen)

    with RecordedAPI(route) as server:
        summary = run(server, tmp_path / "out")
    assert summary.complete and summary.records == len(api.records) - 1
    [failure] = jsonl(tmp_path / "out" / "failures.jsonl")
    assert failure["id"] == api.records[3]["id"] and failure["status"] == 410 and failure["reason"] == "HTTP 410"


def test_a_resumed_pull_asks_neither_the_collection_nor_the_objects_it_has_again(tmp_path):
    api = APIS["getty"]()
    with RecordedAPI(api.route) as server:
        server.fault(api.second_page, Reply(503, b"down"))
        stopped = run(server, tmp_path / "out", retries=0)
        assert not stopped.complete and stopped.records > 0
        before = len(server.seen)
        assert run(server, tmp_path / "out").complete
        asked_again = [s.path for s in server.seen[before:]]
    assert asked_again[0] == f"{ROOT}/activity-stream/page/2" and f"{ROOT}/activity-stream" not in asked_again
    harvested = [o["id"] for o in jsonl(tmp_path / "out" / "objects.jsonl")]
    assert harvested == [o["id"] for o in api.records]  # the first page's objects once, though page 4 updates one


def test_objects_all_refused_on_a_page_stop_the_pull(tmp_path):
    api = APIS["getty"]()

    def route(seen):
        return Reply(403, b"forbidden") if "/object/" in seen.path else api.route(seen)

    with RecordedAPI(route) as server:
        stopped = run(server, tmp_path / "out")
    assert not stopped.complete and "HTTP 403" in stopped.stopped_by and stopped.records == 0


def test_the_harvest_reads_through_the_adapter_to_the_license_verdicts(tmp_path):
    api = APIS["getty"]()
    with RecordedAPI(api.route) as server:
        run(server, tmp_path / "out")
    harvested = list(getty.read(tmp_path / "out" / "objects.jsonl", "getty", {}))
    rows = verdict.apply_policy(records.to_table(harvested), Policy.default()).to_pylist()
    assert [(r["title"], r["status"], r["reason"]) for r in rows] == [
        ("Irises", "pending", ""), ("Wheatstacks, Snow Effect, Morning", "pending", ""),
        ("Studies of a Male Nude", "pending", ""), ("Untitled (Photograph)", "rejected", "license_not_allowed"),
        ("Lidded Cup", "rejected", "no_image"), ("Portrait of a Man", "rejected", "license_unknown"),
        (None, "rejected", "malformed_record")]


def test_the_stream_takes_no_query(tmp_path):
    api = APIS["getty"]()
    with RecordedAPI(api.route) as server, pytest.raises(ValueError, match="takes no --query"):
        harvest = settings(server.url + ROOT)
        pull("getty", "getty", harvest, tmp_path / "out", query="irises", client=fake_client(harvest, FakeTime()))


def test_the_printed_entry_ingests_the_harvest_with_the_manifests_attribution(tmp_path, capsys):
    api = APIS["getty"]()
    with RecordedAPI(api.route) as server:
        code = cli.main(["sources", "pull", "getty", "--out", str(tmp_path / "out"), "--base-url", server.url + ROOT,
                         "--contact", "someone@example.org"])
    printed = capsys.readouterr().out
    assert code == 0
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("name: harvested\n" + printed[printed.index("sources:"):])
    sources = resolve(pipeline, {"out": str(tmp_path / "run")}).sources
    rows = pa.concat_tables(Ingest(sources)(pa.Table.from_pylist(work_items(sources)))).to_pylist()
    assert [(r["source_id"] and r["key"], r["url"], r["status"], r["reason"]) for r in rows] == [
        (key, url, status, reason) for key, url, _, status, reason, *_ in api.expected()]
    irises = rows[0]
    assert irises["attribution"].startswith("Irises by Vincent van Gogh, J. Paul Getty Museum, Los Angeles")
