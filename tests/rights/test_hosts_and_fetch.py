"""The host checks (robots.txt, tdmrep.json) and the image's TDM header, against loopback servers.

Each test server counts its requests: a host's robots.txt and tdmrep.json are asked for once
per run, before any of its images, and the images the host disallows are never requested.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from curate import demo, fetch, records
from curate.localserve import serve
from curate.rights import marked, steps
from curate.rights.filters import EmbeddedRights, RobotsTxt, TdmReservation

SETTINGS = fetch.FetchSettings(processes_count=1, thread_count=2, timeout=2, image_size=64)
DST = "http://cv.iptc.org/newscodes/digitalsourcetype/"
ROBOTS = "User-agent: cleanroom\nDisallow: /private/\n\nUser-agent: *\nAllow: /\n"
TDMREP = [{"location": "/reserved/*", "tdm-reservation": 1, "tdm-policy": "https://rights.example/policy.json"},
          {"location": "/*", "tdm-reservation": 0}]


class Folder:
    """The one RunFolder method the rights checks use."""

    def __init__(self, root: Path):
        self.root = root

    def stage_dir(self, name: str) -> Path:
        return self.root / "work" / name


def site(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def picture(name: str) -> bytes:
    return demo.picture(demo.image_seed(7, name), 96, 80)


@pytest.fixture
def hosts(tmp_path_factory):
    """Three hosts: one whose robots.txt disallows /private/ to our token, one whose tdmrep.json reserves
    /reserved/ and which serves /tdm/... with tdm-reservation: 1, and one that publishes neither."""
    robots = site(tmp_path_factory.mktemp("robots"), {"robots.txt": ROBOTS.encode(),
                                                      "private/a.jpg": picture("a"), "public/b.jpg": picture("b")})
    tdm = site(tmp_path_factory.mktemp("tdm"), {
        ".well-known/tdmrep.json": json.dumps(TDMREP).encode(), "reserved/c.jpg": picture("c"),
        "open/d.jpg": picture("d"), "open/e.jpg": picture("e")})
    plain = site(tmp_path_factory.mktemp("plain"), {
        "f.jpg": picture("f"),
        "ai.jpg": marked.jpeg(picture("ai"), c2pa_actions=[{"action": "c2pa.created",
                                                            "digitalSourceType": DST + "trainedAlgorithmicMedia"}])})
    hits = {"robots": [], "tdm": [], "plain": []}
    with serve(robots, requests=hits["robots"]) as r, serve(tdm, requests=hits["tdm"]) as t, \
            serve(plain, requests=hits["plain"]) as p:
        yield {"robots": r, "tdm": t, "plain": p}, hits


CASES = {  # key -> (host, path, the reason it ends with; "" kept)
    "disallowed": ("robots", "private/a.jpg", "robots_disallowed"),
    "allowed": ("robots", "public/b.jpg", ""),
    "reserved_path": ("tdm", "reserved/c.jpg", "tdm_reserved"),
    "open_path": ("tdm", "open/d.jpg", ""),
    "reserved_header": ("tdm", "tdm/open/e.jpg", "tdm_reserved"),
    "unmarked": ("plain", "f.jpg", ""),
    "ai_made": ("plain", "ai.jpg", "ai_generated"),
}


def filters(root: Path) -> list:
    """The checks as a run binds them to its folder (the license verdict over embedded statements aside)."""
    return steps.bound([RobotsTxt(), TdmReservation(), EmbeddedRights({"license_evidence": False})], Folder(root),
                       policy=None)


def candidates(urls: dict[str, str], keys) -> pa.Table:
    """As a run selects them: these records link no page (tests/rights/test_pages.py has those)."""
    return pa.table({"key": list(keys), "url": [urls[CASES[k][0]] + CASES[k][1] for k in keys],
                     "page_url": pa.nulls(len(keys), pa.string())})


def test_host_rules_decide_before_any_image_is_requested_asking_each_host_once(hosts, tmp_path):
    urls, hits = hosts
    checks = filters(tmp_path)
    split = [steps.before_fetch(candidates(urls, keys), checks, SETTINGS.timeout, SETTINGS.user_agent_token)
             for keys in (list(CASES)[:4], list(CASES)[4:])]  # two sources on the same hosts
    decided = {row["key"]: row for _, d in split for row in d.to_pylist()}
    assert {k: r["reason"] for k, r in decided.items()} == {"disallowed": "robots_disallowed",
                                                           "reserved_path": "tdm_reserved"}
    assert "robots.txt disallows" in decided["disallowed"]["detail"] and "cleanroom" in decided["disallowed"]["detail"]
    assert "'/reserved/*'" in decided["reserved_path"]["detail"]
    assert "https://rights.example/policy.json" in decided["reserved_path"]["detail"]
    assert sorted(k for p, _ in split for k in p["key"].to_pylist()) == sorted(set(CASES) - set(decided))
    for host in ("robots", "tdm", "plain"):
        assert sorted(hits[host]) == ["/.well-known/tdmrep.json", "/robots.txt"], host  # and no image yet

    steps.before_fetch(candidates(urls, CASES), filters(tmp_path), 1, "cleanroom")  # a resumed run
    assert sum(map(len, hits.values())) == 6


def test_an_ai_crawler_token_the_pipeline_lists_is_honoured(tmp_path):
    root = site(tmp_path / "site", {"robots.txt": b"User-agent: GPTBot\nDisallow: /\n", "g.jpg": picture("g")})
    with serve(root) as url:
        table = pa.table({"key": ["k"], "url": [url + "g.jpg"]})
        listed = steps.bound([RobotsTxt({"tokens": ["cleanroom", "GPTBot"]})], Folder(tmp_path / "a"), None)
        unlisted = steps.bound([RobotsTxt({"tokens": ["cleanroom"]})], Folder(tmp_path / "b"), None)
        assert steps.before_fetch(table, listed, 1, "cleanroom")[1]["reason"].to_pylist() == ["robots_disallowed"]
        assert steps.before_fetch(table, unlisted, 1, "cleanroom")[0]["key"].to_pylist() == ["k"]


def test_the_token_a_source_fetches_with_is_checked_even_when_not_listed(tmp_path):
    root = site(tmp_path / "site", {"robots.txt": b"User-agent: mybot\nDisallow: /\n", "g.jpg": picture("g")})
    with serve(root) as url:
        table = pa.table({"key": ["k"], "url": [url + "g.jpg"]})
        checks = steps.bound([RobotsTxt({"tokens": ["cleanroom"]})], Folder(tmp_path / "a"), None)
        decided = steps.before_fetch(table, checks, 1, "mybot")[1].to_pylist()
    assert [(d["reason"], "mybot" in d["detail"]) for d in decided] == [("robots_disallowed", True)]


def test_files_not_on_the_web_have_no_host_rules_and_pass(tmp_path):
    """The opt-in store's file:// URLs: no server publishes robots.txt or tdmrep.json for them."""
    table = pa.table({"key": ["k"], "url": [(tmp_path / "a.jpg").as_uri()],
                      "page_url": [(tmp_path / "a.html").as_uri()]})
    checks = filters(tmp_path)
    left, decided = steps.before_fetch(table, checks, 1, "cleanroom")
    assert left["key"].to_pylist() == ["k"] and decided.num_rows == 0
    assert not (tmp_path / "work" / "hosts").exists() or not any((tmp_path / "work" / "hosts").iterdir())


@pytest.mark.slow
def test_fetch_keeps_the_tdm_header_and_embedded_marks_for_the_filters(hosts, tmp_path):
    """The run's path: host rules, one img2dataset download for both sources' rest, then the filter step."""
    urls, hits = hosts
    checks = filters(tmp_path)
    split = [steps.before_fetch(candidates(urls, keys), checks, SETTINGS.timeout, SETTINGS.user_agent_token)
             for keys in (list(CASES)[:4], list(CASES)[4:])]
    fetch.download(pa.concat_tables([p for p, _ in split]), tmp_path / "fetch", SETTINGS,
                   pa.concat_tables([d for _, d in split]))
    table = records.to_table([records.candidate("test", k, url=urls[CASES[k][0]] + CASES[k][1]) for k in CASES])
    table = fetch.ApplyFetch()(fetch.attach_results(table.set_column(0, "key", pa.array(list(CASES))),
                                                    fetch.results(tmp_path / "fetch")))
    for stage in filters(tmp_path):  # the filter step's own instances, on the cached rules
        table = stage(table)
    rows = {r["key"]: r for r in table.to_pylist()}

    assert {k: (r["status"], r["reason"]) for k, r in rows.items()} == {
        k: ("rejected", reason) if reason else ("pending", "") for k, (_, _, reason) in CASES.items()}
    assert "tdm-reservation: 1" in rows["reserved_header"]["detail"]
    assert "/tdm-policy.json" in rows["reserved_header"]["detail"]
    assert "c2pa.created" in rows["ai_made"]["detail"] and "not verified" in rows["ai_made"]["detail"]
    assert "/private/a.jpg" not in hits["robots"] and "/reserved/c.jpg" not in hits["tdm"]
    assert "/public/b.jpg" in hits["robots"] and "/open/d.jpg" in hits["tdm"]
    assert Counter(hits["tdm"])["/.well-known/tdmrep.json"] == 1


def test_a_host_that_does_not_answer_is_taken_as_disallowed(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    table = pa.table({"key": ["k"], "url": [f"http://127.0.0.1:{port}/x.jpg"], "page_url": pa.nulls(1, pa.string())})
    pending, decided = steps.before_fetch(table, filters(tmp_path), 1, "cleanroom")
    assert pending.num_rows == 0
    assert decided.to_pylist()[0]["reason"] == "robots_disallowed"
    assert "could not be read" in decided.to_pylist()[0]["detail"]
