"""The Commons harvester's own cases: batches over several responses, maxlag, the generator a query picks."""

from __future__ import annotations

import copy

import pytest

from curate.harvest.pull import pull

from .apis import APIS, adapter_rows
from .conftest import FakeTime, RecordedAPI, Reply, fake_client, jsonl, settings

PATH = "/w/api.php"


def run(server, out, time_=None, **kwargs):
    harvest = settings(server.url + PATH, page_size=5)
    return pull("commons", "commons", harvest, out, client=fake_client(harvest, time_ or FakeTime()), **kwargs)


def test_a_batch_whose_imageinfo_spans_two_responses_is_one_line_per_page(tmp_path):
    """Without batchcomplete, a response gives only some pages' imageinfo; the rest come with iicontinue."""
    pages = APIS["commons"]().records[:4]
    bare = {str(p["pageid"]): {k: v for k, v in p.items() if k != "imageinfo"} for p in pages}

    def route(seen):
        if "iicontinue" not in seen.params:
            first = {**bare, **{str(p["pageid"]): p for p in pages[:2]}}
            return Reply.json({"continue": {"iicontinue": "later", "continue": "||"}, "query": {"pages": first}})
        rest = {str(p["pageid"]): {"imageinfo": p["imageinfo"]} for p in pages[2:]}
        return Reply.json({"batchcomplete": "", "query": {"pages": rest}})

    with RecordedAPI(route) as server:
        summary = run(server, tmp_path / "out")
    assert summary.complete and len(server.seen) == 2
    assert jsonl(tmp_path / "out" / "pages.jsonl") == pages
    rows = adapter_rows("commons", tmp_path / "out" / "pages.jsonl")
    assert [r[3] for r in rows] == ["pending"] * 4 and len({r[0] for r in rows}) == 4


def test_maxlag_is_waited_out_as_the_api_asks(tmp_path):
    api = APIS["commons"]()
    time_ = FakeTime()
    with RecordedAPI(api.route) as server:
        server.fault(lambda s: True, Reply.json({"error": {"code": "maxlag", "info": "Waiting for a database: 6 s"}},
                                                headers={"Retry-After": "6"}))
        summary = run(server, tmp_path / "out", time_)
    assert summary.complete and summary.records == len(api.records)
    assert time_.sleeps[0] == pytest.approx(6)
    assert all(s.params["maxlag"] == "5" for s in server.seen)


def test_an_api_error_other_than_maxlag_is_not_asked_again(tmp_path):
    with RecordedAPI(lambda s: Reply.json({"error": {"code": "badcontinue", "info": "Invalid continue param"}})) \
            as server:
        summary = run(server, tmp_path / "out")
    assert not summary.complete and len(server.seen) == 1
    [failure] = jsonl(tmp_path / "out" / "failures.jsonl")
    assert "badcontinue" in failure["reason"] and failure["attempts"] == 1


@pytest.mark.parametrize("query, generator, asked", [
    (None, "allimages", {"gailimit": "5"}),
    ("Category:Paintings by Thomas Cole", "categorymembers",
     {"gcmtitle": "Category:Paintings by Thomas Cole", "gcmtype": "file"}),
    ("lighthouse", "search", {"gsrsearch": "lighthouse", "gsrnamespace": "6"}),
])
def test_the_query_picks_the_generator(tmp_path, query, generator, asked):
    pages = APIS["commons"]().records[:2]
    with RecordedAPI(lambda s: Reply.json({"batchcomplete": "", "query": {"pages": {
            str(p["pageid"]): copy.deepcopy(p) for p in pages}}})) as server:
        assert run(server, tmp_path / "out", query=query).complete
    [seen] = server.seen
    assert seen.params["generator"] == generator and asked.items() <= seen.params.items()
    assert seen.params["prop"] == "imageinfo" and seen.params["iiprop"] == "url|size|mime|mediatype|sha1|extmetadata"
