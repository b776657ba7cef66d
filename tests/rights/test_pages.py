"""The TDMRep signals of the records' pages (page_url), and malformed TDMRep files, against loopback servers.

Each page is requested once per run, however many records link to it, before any image; the
test servers count every request.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from curate import records, stats
from curate.localserve import serve
from curate.rights import steps
from curate.rights.filters import RobotsTxt, TdmReservation
from curate.rights.pages import PageCache, PageSettings
from curate.rights.hosts import HostCache, Politeness
from tests.rights.test_hosts_and_fetch import Folder, picture, site

POLICY = "https://rights.example/tdm-policy.json"
RESERVED = (f'<!doctype html><html><head><title>An object</title><meta name="tdm-reservation" content="1">'
            f'<meta name="TDM-Policy" content="{POLICY}"></head><body><img src="x.jpg"></body></html>')
OPEN = '<html><head><meta name="tdm-reservation" content="0"></head><body>free</body></html>'
PLAIN = "<html><head><title>No signals</title></head><body>" + "<p>words</p>" * 2000 + "</body></html>"
IN_BODY = '<html><head></head><body><meta name="tdm-reservation" content="1"></body></html>'
ODD = '<html><head><meta name="tdm-reservation" content="yes"></head></html>'


@pytest.fixture
def museum(tmp_path_factory):
    """One host with the images and their pages, counting its requests."""
    pages = {"pages/reserved.html": RESERVED, "pages/open.html": OPEN, "pages/plain.html": PLAIN,
             "pages/in-body.html": IN_BODY, "pages/odd.html": ODD, "private/page.html": RESERVED}
    root = site(tmp_path_factory.mktemp("museum"), {
        "robots.txt": b"User-agent: cleanroom\nDisallow: /private/\n",
        **{name: html.encode() for name, html in pages.items()},
        **{f"img/{i}.jpg": picture(str(i)) for i in range(8)}})
    hits: list[str] = []
    with serve(root, requests=hits) as url:
        yield url, hits


RECORDS = {  # key -> (page path or None, the reason before_fetch gives; "" left to download)
    "a": ("pages/reserved.html", "tdm_reserved"),
    "b": ("pages/reserved.html", "tdm_reserved"),  # the same page: asked once
    "c": ("pages/open.html", ""),
    "d": ("pages/plain.html", ""),
    "e": ("pages/missing.html", ""),  # 404: not a reservation
    "f": (None, ""),
    "g": ("pages/in-body.html", ""),  # a meta outside the head is not the page's signal
    "h": ("pages/odd.html", "tdm_malformed"),
}


def candidates(url: str, keys=RECORDS) -> pa.Table:
    return pa.table({"key": list(keys), "url": [f"{url}img/{i}.jpg" for i, _ in enumerate(keys)],
                     "page_url": [url + RECORDS[k][0] if RECORDS[k][0] else None for k in keys]})


def checks(root: Path, **settings) -> list:
    return steps.bound([RobotsTxt(), TdmReservation({"page_interval": 0, **settings})], Folder(root), None)


def record_table(table: pa.Table) -> pa.Table:
    """The candidates as the filter step sees them: records that fetch left pending."""
    return records.to_table([records.candidate("test", row["key"], url=row["url"], page_url=row["page_url"])
                             for row in table.to_pylist()]).set_column(0, "key", table["key"])


def test_a_page_reserving_tdm_rejects_its_records_asking_each_page_once(museum, tmp_path):
    url, hits = museum
    left, decided = steps.before_fetch(candidates(url), checks(tmp_path), 2, "cleanroom")
    fates = {row["key"]: row for row in decided.to_pylist()}
    assert {k: r["reason"] for k, r in fates.items()} == {k: reason for k, (_, reason) in RECORDS.items() if reason}
    for key in "ab":
        assert fates[key]["detail"] == (f'page {url}pages/reserved.html has <meta name="tdm-reservation" '
                                        f'content="1"> (tdm-policy {POLICY})')
    assert "'yes'" not in fates["h"]["detail"] and 'content="yes"' in fates["h"]["detail"]
    assert "fail closed" in fates["h"]["detail"]
    assert sorted(left["key"].to_pylist()) == ["c", "d", "e", "f", "g"]
    pages = Counter(h for h in hits if h.startswith("/pages/"))
    assert pages == Counter({f"/{path}": 1 for path, _ in RECORDS.values() if path})
    assert not [h for h in hits if h.startswith("/img/")]  # no image requested yet

    steps.before_fetch(candidates(url), checks(tmp_path), 2, "cleanroom")  # a resumed run reads the cache
    assert Counter(h for h in hits if h.startswith("/pages/")) == pages


def test_the_filter_step_keeps_a_record_whose_page_could_not_be_read_and_says_why(museum, tmp_path):
    url, hits = museum
    table = candidates(url)
    steps.before_fetch(table, checks(tmp_path), 2, "cleanroom")
    asked = len(hits)
    check = checks(tmp_path)[1]  # the filter step's own instance, on the cached pages
    rows = {r["key"]: r for r in check(record_table(table)).to_pylist()}
    assert len(hits) == asked  # the filter step asks nothing
    assert {k: r["reason"] for k, r in rows.items() if r["status"] != "pending"} == {"a": "tdm_reserved",
                                                                                    "b": "tdm_reserved",
                                                                                    "h": "tdm_malformed"}
    assert rows["e"]["status"] == "pending"
    assert f"page {url}pages/missing.html could not be read (HTTP 404" in rows["e"]["detail"]
    assert "not a TDM reservation" in rows["e"]["detail"]
    assert [rows[k]["detail"] for k in "cdfg"] == [None] * 4


def test_a_page_robots_txt_disallows_is_not_requested(museum, tmp_path):
    url, hits = museum
    table = pa.table({"key": ["p"], "url": [url + "img/0.jpg"], "page_url": [url + "private/page.html"]})
    left, decided = steps.before_fetch(table, checks(tmp_path), 2, "cleanroom")
    assert left["key"].to_pylist() == ["p"] and decided.num_rows == 0
    assert "/private/page.html" not in hits
    row = checks(tmp_path)[1](record_table(table)).to_pylist()[0]
    assert row["status"] == "pending" and "not requested" in row["detail"] and "robots.txt disallows" in row["detail"]


@pytest.fixture
def elsewhere(tmp_path_factory):
    """A second host, which pages on the first redirect to: robots.txt disallows /private/ to our token."""
    root = site(tmp_path_factory.mktemp("elsewhere"), {
        "robots.txt": b"User-agent: cleanroom\nDisallow: /private/\n",
        "pages/reserved.html": RESERVED.encode(), "private/page.html": OPEN.encode()})
    hits: list[str] = []
    with serve(root, requests=hits) as url:
        yield url.replace("127.0.0.1", "localhost"), hits  # another host name for the same loopback


def test_a_redirect_is_followed_only_where_the_targets_robots_txt_allows(museum, elsewhere, tmp_path):
    url, hits = museum
    other, other_hits = elsewhere
    targets = {"same-host-private": "redirect/private/page.html",
               "other-host-reserved": f"redirect/{other}pages/reserved.html",
               "other-host-private": f"redirect/{other}private/page.html",
               "not-the-web": "redirect/ftp://127.0.0.1:9/page.html"}
    table = pa.table({"key": list(targets), "url": [f"{url}img/{i}.jpg" for i in range(len(targets))],
                      "page_url": [url + path for path in targets.values()]})
    left, decided = steps.before_fetch(table, checks(tmp_path), 2, "cleanroom")
    assert {r["key"]: r["reason"] for r in decided.to_pylist()} == {"other-host-reserved": "tdm_reserved"}
    assert "/private/page.html" not in hits and "/private/page.html" not in other_hits
    assert other_hits.count("/robots.txt") == 1 and "/pages/reserved.html" in other_hits
    rows = {r["key"]: r for r in checks(tmp_path)[1](record_table(table)).to_pylist()}
    for key in ("same-host-private", "other-host-private"):
        assert rows[key]["status"] == "pending"
        assert "not followed" in rows[key]["detail"] and "robots.txt disallows" in rows[key]["detail"]
    assert "not followed: not an http(s) URL" in rows["not-the-web"]["detail"]


def test_redirects_to_one_host_are_spaced_as_that_hosts_pages_are(museum, elsewhere, tmp_path, monkeypatch):
    from curate.rights import pages

    url, _ = museum
    other, other_hits = elsewhere
    waits: list[float] = []
    monkeypatch.setattr(pages.time, "sleep", waits.append)  # the waits asked for, none waited
    table = pa.table({"key": ["one", "two"], "url": [url + "img/0.jpg", url + "img/1.jpg"],
                      "page_url": [f"{url}redirect/{other}pages/reserved.html",
                                   f"{url}redirect/{other}pages/reserved.html?again"]})
    _, decided = steps.before_fetch(table, checks(tmp_path, page_interval=30), 2, "cleanroom")
    assert decided.num_rows == 2 and other_hits.count("/pages/reserved.html") == 1
    # One wait between the first host's two pages, one before the second redirect to the other host.
    assert len([w for w in waits if w > 25]) == 2


def test_no_page_is_requested_when_the_check_is_off(museum, tmp_path):
    url, hits = museum
    left, decided = steps.before_fetch(candidates(url), checks(tmp_path, page_meta=False), 2, "cleanroom")
    assert decided.num_rows == 0 and left.num_rows == len(RECORDS)
    assert not [h for h in hits if h.startswith("/pages/")]
    assert not (tmp_path / "work" / steps.PAGES).exists()


def test_many_pages_are_found_again_across_parts_and_row_groups(tmp_path):
    root = site(tmp_path / "site", {f"p/{i}.html": (RESERVED if i % 7 == 0 else OPEN).encode()
                                    for i in range(700)})
    hosts, pages = HostCache(tmp_path / "hosts"), PageCache(tmp_path / "pages")
    politeness, settings = Politeness(2, "cleanroom"), PageSettings(interval=0, max_bytes=65536)
    with serve(root) as url:
        hosts.ensure([url.rstrip("/")], politeness)
        for part in (range(0, 300), range(300, 700)):  # two sources' pages: merged into one file
            listed = pa.array([f"{url}p/{i}.html" for i in part] * 2)  # each page linked twice
            assert pages.ensure(listed, politeness, settings, hosts) == len(part)
        assert pages.ensure(pa.array([f"{url}p/{i}.html" for i in range(700)]), politeness, settings, hosts) == 0
    assert len(list((tmp_path / "pages").iterdir())) == 1
    wanted = [f"{url}p/{i}.html" for i in (0, 1, 299, 300, 301, 698, 699)] + [f"{url}p/none.html"]
    found = PageCache(tmp_path / "pages").lookup(wanted)  # a worker's own reader
    assert {page: p.reserved for page, p in found.items()} == {
        f"{url}p/{i}.html": i % 7 == 0 for i in (0, 1, 299, 300, 301, 698, 699)}


def test_a_malformed_tdmrep_json_is_taken_as_a_reservation_and_counted(tmp_path):
    root = site(tmp_path / "site", {".well-known/tdmrep.json": b'{"location": "/*", "tdm-reservation": 1',
                                    "robots.txt": b"", "a.jpg": picture("a")})
    with serve(root) as url:
        table = pa.table({"key": ["k"], "url": [url + "a.jpg"], "page_url": [None]})
        left, decided = steps.before_fetch(table, checks(tmp_path / "run"), 2, "cleanroom")
    fate = decided.to_pylist()[0]
    assert left.num_rows == 0 and (fate["reason"], fate["stage"]) == ("tdm_malformed", "tdm_reservation")
    assert f"{url.rstrip('/')}/.well-known/tdmrep.json: not JSON" in fate["detail"] and "fail closed" in fate["detail"]

    manifest = tmp_path / "records"
    manifest.mkdir()
    row = records.candidate("test", "k", url=url + "a.jpg")
    records.finish(row, "rejected", fate["reason"], fate["detail"], stage=fate["stage"])
    duckdb.from_arrow(records.to_table([row])).write_parquet(str(manifest / "part.parquet"))
    counted = stats.compute(manifest, ["ingest", "tdm_reservation", "shards"])
    assert counted["by_stage"]["tdm_reservation"]["fates"] == {"rejected:tdm_malformed": 1}
    assert "fail closed" in TdmReservation().describe()


def test_a_tdmrep_json_of_the_wrong_shape_names_the_rule(tmp_path):
    root = site(tmp_path / "site", {".well-known/tdmrep.json": json.dumps([{"location": "/*",
                                                                            "tdm-reservation": 2}]).encode(),
                                    "robots.txt": b"", "a.jpg": picture("a")})
    with serve(root) as url:
        table = pa.table({"key": ["k"], "url": [url + "a.jpg"], "page_url": [None]})
        _, decided = steps.before_fetch(table, checks(tmp_path), 2, "cleanroom")
    assert "rule 0 (/*): tdm-reservation must be 0 or 1, got 2" in decided.to_pylist()[0]["detail"]
