"""The museum and library listings: the filters and fields they ask for, AIC's IIIF config, Flickr's cap."""

from __future__ import annotations

import json

from curate.harvest.pull import pull

from .apis import APIS, adapter_rows
from .conftest import FakeTime, RecordedAPI, Reply, fake_client, jsonl, settings


def test_cleveland_sends_the_manifests_filters_and_the_query_with_skip_and_limit(tmp_path):
    api = APIS["cleveland"]()
    with RecordedAPI(api.route) as server:
        harvest = settings(server.url + "/api", page_size=4, params={"cc0": "1", "has_image": "1"})
        summary = pull("cleveland", "cleveland", harvest, tmp_path / "out", query="cole",
                       client=fake_client(harvest, FakeTime()))
    assert summary.complete and summary.records == len(api.records)
    assert [(s.params["skip"], s.params["limit"]) for s in server.seen] == [("0", "4"), ("4", "4"), ("8", "4")]
    assert all(s.params["q"] == "cole" and s.params["cc0"] == "1" and s.params["has_image"] == "1"
               for s in server.seen)


def test_aic_asks_for_the_fields_the_adapter_reads_and_keeps_the_iiif_config(tmp_path):
    api = APIS["aic"]()
    with RecordedAPI(api.route) as server:
        harvest = settings(server.url + "/api/v1", page_size=2)
        summary = pull("aic", "aic", harvest, tmp_path / "out", query="monet", client=fake_client(harvest, FakeTime()))
    assert summary.complete
    assert {s.path for s in server.seen} == {"/api/v1/artworks/search"}
    fields = set(server.seen[0].params["fields"].split(","))
    assert {"id", "image_id", "is_public_domain", "copyright_notice", "title", "artist_display"} <= fields
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["iiif_url"] == "https://www.artic.edu/iiif/2"
    rows = adapter_rows("aic", tmp_path / "out" / "artworks.jsonl")
    assert rows == api.expected()
    assert all(url.startswith("https://www.artic.edu/iiif/2/") for _, url, *_ in rows)


def test_a_flickr_search_past_the_4000_results_it_serves_stops_and_says_to_narrow_it(tmp_path, monkeypatch):
    from .apis import KEY, KEY_ENV

    monkeypatch.setenv(KEY_ENV, KEY)
    photo = APIS["flickr"]().records[0]

    def route(seen):
        page, size = int(seen.params["page"]), int(seen.params["per_page"])
        photos = [{**photo, "id": str(page * size + i)} for i in range(size)]
        return Reply.json({"photos": {"page": page, "pages": 5, "perpage": size, "total": "9000", "photo": photos},
                           "stat": "ok"})

    with RecordedAPI(route) as server:
        harvest = settings(server.url + "/services/rest", page_size=2000, api_key_env=KEY_ENV)
        summary = pull("flickr", "flickr", harvest, tmp_path / "out", query="lighthouse",
                       client=fake_client(harvest, FakeTime()))
    assert summary.complete and summary.records == 4000 and len(server.seen) == 2
    [failure] = jsonl(tmp_path / "out" / "failures.jsonl")
    assert failure["reason"] == "query_too_broad" and "first 4000 results" in failure["detail"]
    assert all(s.params["license"] == "9,10" and s.params["text"] == "lighthouse" for s in server.seen)


def test_a_value_with_a_line_separator_stays_on_its_line(tmp_path):
    api = APIS["cleveland"]()
    api.records[0]["title"] = "View\u2028of\u0085Schroon\rMountain"
    with RecordedAPI(api.route) as server:
        harvest = settings(server.url + "/api")
        assert pull("cleveland", "cleveland", harvest, tmp_path / "out", client=fake_client(harvest, FakeTime()))
    lines = (tmp_path / "out" / "artworks.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(api.records)
    assert adapter_rows("cleveland", tmp_path / "out" / "artworks.jsonl")[0][5] == "View\u2028of\u0085Schroon\rMountain"
