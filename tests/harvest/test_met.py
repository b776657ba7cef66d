"""The Met harvester's own cases: objects asked for in parallel within the limit, objects the API lacks."""

from __future__ import annotations

from curate.harvest.pull import pull

from .apis import APIS, adapter_rows
from .conftest import CONTACT, FakeTime, RecordedAPI, Reply, fake_client, jsonl, settings

BASE = "/public/collection/v1"


def test_objects_are_asked_for_concurrently_but_never_more_than_the_limit(tmp_path):
    from curate.harvest.client import PoliteClient

    api = APIS["met"]()

    def route(seen):
        reply = api.route(seen)
        return Reply(reply.status, reply.body, reply.headers, delay=0.05)  # long enough to overlap

    with RecordedAPI(route) as server:
        harvest = settings(server.url + BASE, concurrency=3, page_size=6, requests_per_second=500)
        summary = pull("met", "met", harvest, tmp_path / "out", client=PoliteClient(harvest, CONTACT))
    assert summary.complete
    assert server.most_open == 3
    assert adapter_rows("met", tmp_path / "out" / "objects.jsonl") == api.expected()  # in the list's order


def test_an_object_the_api_does_not_serve_is_a_recorded_failure_and_the_rest_is_harvested(tmp_path):
    api = APIS["met"]()
    ids = [o["objectID"] for o in api.records]

    def route(seen):
        if seen.path == f"{BASE}/objects":
            return Reply.json({"total": len(ids) + 3, "objectIDs": [*ids[:2], 999999999, "12a", True, *ids[2:]]})
        return api.route(seen)

    with RecordedAPI(route) as server:
        harvest = settings(server.url + BASE, page_size=5)
        summary = pull("met", "met", harvest, tmp_path / "out", client=fake_client(harvest, FakeTime()))
    assert summary.complete and summary.records == len(ids) and summary.failures == 3
    failures = jsonl(tmp_path / "out" / "failures.jsonl")
    assert [(f["reason"], f["id"]) for f in failures] == [("not an object id", "12a"), ("not an object id", True),
                                                           ("HTTP 404", 999999999)]
    assert len([s for s in server.seen if s.path == f"{BASE}/objects/999999999"]) == 1  # a 404 is not retried
    assert adapter_rows("met", tmp_path / "out" / "objects.jsonl") == api.expected()


def test_a_search_lists_only_objects_with_images(tmp_path):
    api = APIS["met"]()
    with RecordedAPI(lambda s: Reply.json({"total": 0, "objectIDs": None}) if s.path.endswith("/search")
                     else api.route(s)) as server:
        harvest = settings(server.url + BASE)
        summary = pull("met", "met", harvest, tmp_path / "out", query="sunflowers",
                       client=fake_client(harvest, FakeTime()))
    assert summary.complete and summary.records == 0
    [seen] = server.seen
    assert seen.params == {"q": "sunflowers", "hasImages": "true"}


def test_a_batch_cut_by_the_limit_and_finished_later_records_its_failures_and_pages_once(tmp_path):
    api = APIS["met"]()
    ids = [o["objectID"] for o in api.records]

    def route(seen):
        if seen.path == f"{BASE}/objects":
            return Reply.json({"total": len(ids) + 1, "objectIDs": [ids[0], 999999999, *ids[1:]]})
        return api.route(seen)

    with RecordedAPI(route) as server:
        harvest = settings(server.url + BASE, page_size=5)
        for limit in (2, 3, None):
            summary = pull("met", "met", harvest, tmp_path / "out", limit=limit,
                           client=fake_client(harvest, FakeTime()))
    assert summary.complete and summary.records == len(ids) and summary.failures == 1
    assert [f["id"] for f in jsonl(tmp_path / "out" / "failures.jsonl")] == [999999999]
    index = jsonl(tmp_path / "out" / "raw" / "index.jsonl")
    assert len(index) == len({e["url"] for e in index}) == 1 + len(ids)  # the list and each object, once
    assert adapter_rows("met", tmp_path / "out" / "objects.jsonl") == api.expected()


def test_a_batch_refused_whole_stops_the_pull_and_a_rerun_asks_it_again(tmp_path):
    api = APIS["met"]()
    blocked = {"on": True}
    refused = {f"{BASE}/objects/{o['objectID']}" for o in api.records[5:]}  # from the second batch on

    def route(seen):
        if blocked["on"] and seen.path in refused:
            return Reply(403, b"Request blocked")
        return api.route(seen)

    with RecordedAPI(route) as server:
        harvest = settings(server.url + BASE, page_size=5)
        stopped = pull("met", "met", harvest, tmp_path / "out", client=fake_client(harvest, FakeTime()))
        assert not stopped.complete and "HTTP 403" in stopped.stopped_by and stopped.records == 5
        blocked["on"] = False
        resumed = pull("met", "met", harvest, tmp_path / "out", client=fake_client(harvest, FakeTime()))
    assert resumed.complete and resumed.records == len(api.records)
    assert adapter_rows("met", tmp_path / "out" / "objects.jsonl") == api.expected()
