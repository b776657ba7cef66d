"""Polite fetch against loopback hosts (127.0.0.2, 127.0.0.3: separate hosts to the limiter): per-host rate and
concurrency, 429 backoff, a resumed fetch asking again only what may answer now, and sizes judged before download."""

from __future__ import annotations

import io
import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pytest
from PIL import Image
from pydantic import ValidationError

from curate import fetch, records
from curate.score.resolution import Resolution, before_fetch

RATE, CONCURRENT, PROCESSES = 5.0, 2, 2
SETTINGS = fetch.FetchSettings(processes_count=PROCESSES, thread_count=4, timeout=5, image_size=64,
                               number_sample_per_shard=8, host_requests_per_second=RATE, host_concurrency=CONCURRENT,
                               busy_retries=3, backoff_s=0.05, backoff_max_s=5, resume_retries=1)
LIMITED = [f"a{i:02d}" for i in range(16)]  # keys of images on the limited host


def jpeg(size: int) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((size, size), 40).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


class Host(ThreadingHTTPServer):
    """Serves one JPEG at any path, after the statuses scripted for that path; records every request."""

    def __init__(self, address: str):
        super().__init__((address, 0), Handler)
        self.image = jpeg(96)
        self.script: dict[str, list[int]] = {}  # path -> statuses to answer before the image
        self.always: dict[str, int] = {}  # path -> status answered every time
        self.seen: list[tuple[str, float, float]] = []  # (path, arrived, answered), time.monotonic
        self.open = self.most_open = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}"

    def paths(self) -> list[str]:
        return [path for path, _, _ in self.seen]


class Handler(BaseHTTPRequestHandler):
    server: Host

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        host, arrived = self.server, time.monotonic()
        with host.lock:
            host.open += 1
            host.most_open = max(host.most_open, host.open)
            scripted = host.script.get(self.path)
            status = host.always.get(self.path) or (scripted.pop(0) if scripted else 200)
        time.sleep(0.05)  # long enough for requests let through together to overlap here
        with host.lock:  # counted closed before the answer leaves: the client can only ever see fewer open
            host.open -= 1
            host.seen.append((self.path, arrived, time.monotonic()))
        body = host.image if status == 200 else b"no"
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Type", "image/jpeg" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (signature of the base class)
        pass


@contextmanager
def hosts(*addresses: str):
    started = [Host(address) for address in addresses]
    threads = [threading.Thread(target=h.serve_forever, daemon=True) for h in started]
    for thread in threads:
        thread.start()
    try:
        yield started
    finally:
        for host in started:
            host.shutdown()
            host.server_close()


def stated(width: int, height: int) -> str:
    return json.dumps({"source_width": width, "source_height": height})


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    """One fetch, then a resumed one, then another resume; what each asked of the hosts."""
    with hosts("127.0.0.2", "127.0.0.3") as (limited, other):
        other.script["/busy.jpg"] = [429, 429]
        other.script["/flaky.jpg"] = [500]
        other.always.update({"/down.jpg": 500, "/gone.jpg": 404})
        rows = [(key, f"{limited.url}/{key}.jpg", None) for key in LIMITED] + [
            ("busy", f"{other.url}/busy.jpg", None), ("flaky", f"{other.url}/flaky.jpg", None),
            ("down", f"{other.url}/down.jpg", None), ("gone", f"{other.url}/gone.jpg", None),
            ("stated-small", f"{other.url}/stated-small.jpg", stated(40, 30)),
            ("stated-large", f"{other.url}/stated-large.jpg", stated(4000, 3000))]
        candidates = pa.table(dict(zip(["key", "url", "meta"], map(list, zip(*rows)))))
        left, decided = before_fetch(candidates, [Resolution({"min_side": 64})])
        out = tmp_path_factory.mktemp("fetch") / "source"
        fetch.download(left, out, SETTINGS, decided)
        first = {r["key"]: r for r in fetch.results(out).to_pylist()}
        asked_before = len(limited.seen), len(other.seen)
        fetch.download(left, out, SETTINGS, decided)
        resumed = {r["key"]: r for r in fetch.results(out).to_pylist()}
        asked_on_resume = limited.paths()[asked_before[0]:] + other.paths()[asked_before[1]:]
        asked_before = len(limited.seen), len(other.seen)
        fetch.download(left, out, SETTINGS, decided)
        asked_on_second_resume = limited.paths()[asked_before[0]:] + other.paths()[asked_before[1]:]
    return dict(out=out, limited=limited, other=other, first=first, resumed=resumed,
                asked_on_resume=asked_on_resume, asked_on_second_resume=asked_on_second_resume)


def test_a_hosts_rate_and_concurrency_are_never_exceeded(fetched):
    limited = fetched["limited"]
    assert sorted(limited.paths()) == sorted(f"/{key}.jpg" for key in LIMITED)
    assert all(fetched["first"][key]["status"] == records.PENDING for key in LIMITED)
    assert limited.most_open <= CONCURRENT
    # Each of the processes keeps to RATE / PROCESSES on its own, so any stretch of time holds at most
    # RATE per second plus one request per process; 0.25 s allows for the requests' own travel.
    starts = sorted(arrived for _, arrived, _ in limited.seen)
    for i, first in enumerate(starts):
        for j in range(i + 1, len(starts)):
            assert j - i + 1 <= RATE * (starts[j] - first + 0.25) + PROCESSES, (i, j, starts)


def test_a_429_is_waited_for_as_retry_after_says_then_succeeds(fetched):
    other = fetched["other"]
    busy = [(arrived, answered) for path, arrived, answered in other.seen if path == "/busy.jpg"][:3]
    assert len(busy) == 3
    for (_, answered), (arrived, _) in zip(busy, busy[1:]):
        assert arrived - answered >= 1.0  # Retry-After: 1, far above the 0.05 s backoff
    result = fetched["first"]["busy"]
    assert (result["status"], result["attempts"]) == (records.PENDING, 1)


def test_a_resumed_fetch_asks_again_only_for_retryable_failures(fetched):
    first, resumed = fetched["first"], fetched["resumed"]
    assert (first["flaky"]["reason"], first["down"]["reason"]) == ("download_http_500", "download_http_500")
    assert first["gone"]["reason"] == "download_http_404"
    assert sorted(fetched["asked_on_resume"]) == ["/down.jpg", "/flaky.jpg"]  # not the 404, nor what succeeded
    flaky = resumed["flaky"]
    assert (flaky["status"], flaky["attempts"]) == (records.PENDING, 2)
    assert flaky["image_file"].startswith(f"{fetched['out'].name}/{fetch.RETRY}1/{fetch.IMAGES}/")
    stored = fetch.read_located(fetched["out"].parent, [flaky])["flaky"]
    assert Image.open(io.BytesIO(stored)).size == (64, 64)
    assert (resumed["down"]["reason"], resumed["down"]["attempts"]) == ("download_http_500", 2)
    assert (resumed["gone"]["reason"], resumed["gone"]["attempts"]) == ("download_http_404", 1)
    for key in [*LIMITED, "busy"]:  # kept where the first pass stored them
        assert resumed[key] == first[key]


def test_retries_on_resume_are_bounded(fetched):
    assert fetched["asked_on_second_resume"] == []  # down.jpg had its resume_retries=1


def test_a_stated_size_below_min_side_is_rejected_without_a_request(fetched):
    result = fetched["resumed"]["stated-small"]
    assert (result["status"], result["reason"], result["stage"]) == (records.REJECTED, "min_side", "resolution")
    assert result["detail"] == "original 40x30 (size from the source metadata): short side 30 < min_side 64"
    assert "/stated-small.jpg" not in fetched["other"].paths()
    assert fetched["other"].paths().count("/stated-large.jpg") == 1  # a size within bounds is fetched as any


@pytest.mark.parametrize("reason, again", [
    ("download_timeout", True), ("download_error", True), ("download_http_429", True), ("download_http_503", True),
    ("download_http_500", True), ("download_http_404", False), ("download_http_403", False),
    ("site_disallowed", False), ("decode_error", False), ("too_many_pixels", False), ("not_fetched", False),
])
def test_which_failures_a_resume_asks_again(reason, again):
    assert fetch.retryable(reason) is again


def test_a_429_that_outlasts_the_retries_fails_with_a_retryable_reason():
    status, reason = fetch.fate("HTTP Error 429: Too Many Requests (after 4 attempts)")
    assert (status, reason) == (records.FAILED, "download_http_429") and fetch.retryable(reason)


def test_a_host_concurrency_below_the_processes_is_refused():
    with pytest.raises(ValidationError, match="host_concurrency 1 < processes_count 2"):
        fetch.FetchSettings(processes_count=2, host_concurrency=1)
