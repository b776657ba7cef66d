"""A recorded API on 127.0.0.1 for the harvest tests, and a clock the client's waits can be read from.

``RecordedAPI`` answers each request with ``route(seen)``, except that a queued fault (a 429 with
Retry-After, a 500, a slow or malformed page) is served first to the first request it matches. It
notes every request as it arrives (its own monotonic time, path, query, headers) and how many
were open at once, so that rate and concurrency are measured on the server's side.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

import pytest

from curate.harvest.client import PoliteClient
from curate.harvest.settings import HarvestSettings

FIXTURES = Path(__file__).parents[1] / "fixtures" / "sources"
CONTACT = "harvest-tests@example.org"


@dataclass(frozen=True)
class Seen:
    at: float
    path: str
    params: dict[str, str]
    headers: dict[str, str]


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    cut_at: int | None = None  # send only this many bytes of the body, then close: a dropped download

    @classmethod
    def json(cls, value: Any, headers: dict[str, str] | None = None, **kwargs: Any) -> "Reply":
        return cls(body=json.dumps(value).encode(), headers={"Content-Type": "application/json", **(headers or {})},
                   **kwargs)


def too_many(after: int = 7) -> Reply:
    return Reply(429, b"slow down", {"Retry-After": str(after)})


SERVER_ERROR = Reply(500, b"<html>Internal Server Error</html>")
MALFORMED = Reply(200, b'{"batchcomplete": "", "query": {"pages": {"1": {"pagei', {"Content-Type": "application/json"})


def slow(reply_seconds: float = 1.5) -> Reply:
    return Reply.json({"late": True}, delay=reply_seconds)


class RecordedAPI:
    def __init__(self, route: Callable[[Seen], Reply]):
        self.route = route
        self.seen: list[Seen] = []
        self.open_now = self.most_open = 0
        self._faults: list[tuple[Callable[[Seen], bool], Reply]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fault(self, matches: Callable[[Seen], bool], reply: Reply) -> None:
        """Serve ``reply`` to the next request that ``matches`` (faults queue up in order)."""
        self._faults.append((matches, reply))

    def requests(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def _reply(self, seen: Seen) -> Reply:
        with self._lock:
            self.seen.append(seen)
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)
            for i, (matches, reply) in enumerate(self._faults):
                if matches(seen):
                    del self._faults[i]
                    return reply
        return self.route(seen)

    def _closed(self) -> None:
        with self._lock:
            self.open_now -= 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
                parts = urlsplit(self.path)
                seen = Seen(time.monotonic(), parts.path, dict(parse_qsl(parts.query, keep_blank_values=True)),
                            dict(self.headers))
                try:
                    reply = api._reply(seen)
                    time.sleep(reply.delay)
                finally:
                    # Counted closed before the answer leaves: the client can only start its next request
                    # once it has the answer, so a handler thread still finishing never counts as open.
                    api._closed()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body[:reply.cut_at])
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a slow page, as it should

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> "RecordedAPI":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeTime:
    """``clock`` and ``sleep`` for the client: sleeping moves the clock and is noted, nothing waits."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def settings(base_url: str, **changes: Any) -> HarvestSettings:
    """Fast test settings: short timeout, small pages, a quick backoff (a server's Retry-After wins)."""
    values = dict(base_url=base_url, requests_per_second=1000, concurrency=1, page_size=5, timeout_s=0.5,
                  retries=3, backoff_s=0.01, backoff_max_s=30, contact=CONTACT)
    return HarvestSettings(**{**values, **changes})


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def fake_client(harvest: HarvestSettings, time_: FakeTime) -> PoliteClient:
    return PoliteClient(harvest, CONTACT, clock=time_.clock, sleep=time_.sleep, rng=random.Random(0))


def jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
