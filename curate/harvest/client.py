"""A polite HTTP client for harvesting public APIs.

Per host it keeps to the manifest's request rate (request starts spaced ``1/requests_per_second``
apart) and concurrency (requests open at once). A 429 or 503, another 5xx, a timeout, a dropped
connection or a page that does not parse is asked again after an exponential backoff with jitter,
or after the server's ``Retry-After`` when that is longer; while one request backs off, every
request to that host waits, as the server asked. After ``retries`` more attempts the request
fails with ``RequestFailed``, which names the URL (API keys masked) and the last reason. Any
other 4xx fails at once: asking again would get the same answer.

Time is injected (``clock``, ``sleep``, ``rng``) so that a test can observe every wait.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from importlib.metadata import version
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlencode, urlsplit

import httpx

from curate.harvest.settings import HarvestSettings
from curate.io import atomic_path, write_text_atomic

# Asked again after a backoff; 429 and 503 are how servers say "slow down" and carry Retry-After.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MASK = "***"
_SLACK_S = 1e-6  # a start time this close is now: a float sum's rounding must not cost another sleep
PART = ".part"  # a resumable download's bytes so far; PART + ".json": what they are part of

log = logging.getLogger("cleanroom.harvest")


class BadResponse(Exception):
    """A response that is not a usable page: why, and the HTTP status and body when there was one."""

    def __init__(self, reason: str, status: int | None = None, body: bytes = b""):
        super().__init__(reason)
        self.reason, self.status, self.body = reason, status, body


class Transient(BadResponse):
    """A response worth asking for again (after ``retry_after`` seconds, when the server said)."""

    def __init__(self, reason: str, retry_after: float | None = None, status: int | None = None, body: bytes = b""):
        super().__init__(reason, status, body)
        self.retry_after = retry_after


class Unusable(BadResponse):
    """A response that asking again would not change (a 404, an API error that is not about load)."""


class RequestFailed(Exception):
    """A request that got no usable answer; ``url`` has its secret parameters masked."""

    def __init__(self, url: str, reason: str, attempts: int, status: int | None = None, body: bytes = b""):
        super().__init__(f"{url}: {reason} (after {attempts} attempt{'s' if attempts != 1 else ''})")
        self.url, self.reason, self.attempts, self.status, self.body = url, reason, attempts, status, body

    def record(self, **about: Any) -> dict[str, Any]:
        """The failure as a line of ``failures.jsonl``: what was asked, why it failed, the start of the body."""
        return {**about, "url": self.url, "reason": self.reason, "status": self.status, "attempts": self.attempts,
                "body": self.body[:500].decode("utf-8", errors="replace")}


@dataclass(frozen=True)
class Page:
    url: str  # as reported: secret parameters masked
    body: bytes
    value: Any  # what ``parse`` made of the body


Parse = Callable[[httpx.Response], Any]


def json_body(response: httpx.Response) -> Any:
    """The body as JSON; a body that is not (cut off, an HTML error page) is worth asking again."""
    try:
        return json.loads(response.content)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Transient(f"malformed page: not JSON ({e})") from None


def user_agent(contact: str) -> str:
    """An identifying User-Agent with a contact, the form Wikimedia's User-Agent policy asks for."""
    return f"cleanroom-harvest/{version('cleanroom')} ({contact}) httpx/{httpx.__version__}"


def retry_after(value: str | None, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - now()).total_seconds())


class HostLimiter:
    """One host's request rate and concurrency; ``hold`` makes every later request to it wait."""

    def __init__(self, settings: HarvestSettings, clock: Callable[[], float], sleep: Callable[[float], None]):
        self._interval = 1.0 / settings.requests_per_second
        self._open = threading.BoundedSemaphore(settings.concurrency)
        self._lock = threading.Lock()
        self._next = float("-inf")
        self._clock, self._sleep = clock, sleep

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._open:
            self._wait_turn()
            yield

    def _wait_turn(self) -> None:
        """Wait for the host's next start time, then take it. Starts are spaced from when requests really
        start, so a thread the scheduler wakes late does not start together with the next one; and a hold
        placed while a request waits moves the time it waits for."""
        while True:
            with self._lock:
                now = self._clock()
                if self._next - now <= _SLACK_S:
                    self._next = now + self._interval
                    return
                wait = self._next - now
            self._sleep(wait)

    def hold(self, seconds: float) -> None:
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)


class PoliteClient:
    def __init__(self, settings: HarvestSettings, contact: str, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None):
        self.settings = settings
        self.user_agent = user_agent(contact)
        self._clock, self._sleep = clock, sleep
        self._rng = rng or random.Random()
        self._hosts: dict[str, HostLimiter] = {}
        self._hosts_lock = threading.Lock()
        self._http = httpx.Client(headers={"User-Agent": self.user_agent}, follow_redirects=True,
                                  timeout=settings.timeout_s)
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> "PoliteClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()

    def get(self, url: str, params: dict[str, Any] | None = None, *, parse: Parse = json_body,
            secret: Sequence[str] = ()) -> Page:
        """GET ``url`` politely and parse it; raises ``RequestFailed`` when no attempt gave a usable page."""
        params = dict(params or {})
        shown = reported_url(url, params, secret)

        def page(response: httpx.Response) -> Page:
            response.read()
            _check_status(response)
            try:
                return Page(shown, response.content, parse(response))
            except BadResponse as e:
                e.status, e.body = response.status_code, response.content
                raise

        return self._politely(url, params, shown, page)

    def download(self, url: str, path: Path, *, resume: bool = False) -> int:
        """Stream ``url`` into ``path`` (written atomically: a cut-off download leaves no file) politely;
        returns its size in bytes. For published files too large to hold in memory (NGA's CSVs).

        With ``resume`` (dumps of hundreds of megabytes) what arrived is kept in ``path.part`` instead,
        and the next attempt, or the next pull, asks only for the rest (see ``_resume``)."""
        if resume:
            return self._resume(url, path)

        def save(response: httpx.Response) -> int:
            _check_status(response, read=True)
            try:
                with atomic_path(path) as tmp, open(tmp, "wb") as f:
                    for chunk in response.iter_bytes():
                        f.write(chunk)
                    size = f.tell()
            except httpx.TransportError as e:  # the connection dropped mid-file: the whole file is asked again
                raise Transient(f"download cut off: {type(e).__name__}: {e}", status=response.status_code) from None
            return size

        return self._politely(url, {}, url, save)

    def _resume(self, url: str, path: Path) -> int:
        """Download ``url`` into ``path`` by a Range request from the end of ``path.part``. The part's
        validator (a strong ETag, else Last-Modified) goes in If-Range, so a server whose file changed
        since sends it whole (200), which starts the part again, as does a server that ignores ranges;
        a 206 that does not continue the part, or is of a file of another length, starts it again too."""
        part, about = path.with_name(path.name + PART), path.with_name(path.name + PART + ".json")

        def have() -> int:
            return part.stat().st_size if part.is_file() else 0

        def headers() -> dict[str, str]:
            if not have() or not about.is_file():
                return {}
            validator = json.loads(about.read_text(encoding="utf-8")).get("validator")
            return {"Range": f"bytes={have()}-", **({"If-Range": validator} if validator else {})}

        def save(response: httpx.Response) -> int:
            kept, status = have(), response.status_code
            total = _range_total(response.headers.get("Content-Range"))
            if status == 416 and about.is_file() and total == _known_length(about) == kept:
                return kept  # the part was whole already: killed before it was renamed
            if status == 416:
                part.unlink(missing_ok=True)
                raise Transient("HTTP 416: the kept part does not fit the file; starting it again", status=status)
            _check_status(response, read=True)
            if status == 206:
                start = _range_start(response.headers.get("Content-Range"))
                if start != kept or total != _known_length(about):
                    part.unlink(missing_ok=True)
                    raise Transient(f"HTTP 206 of bytes from {start} of {total}, not from {kept} of "
                                    f"{_known_length(about)}: starting the download again", status=status)
            else:  # the whole file: the server ignores ranges, the file changed, or nothing was kept
                part.unlink(missing_ok=True)  # first: old bytes must never sit under the new file's validator
                write_text_atomic(json.dumps({"url": url, "validator": _validator(response.headers),
                                              "length": _length(response.headers)}), about)
            return _append_body(response, part, "ab" if status == 206 else "wb")

        size = self._politely(url, {}, url, save, headers)
        os.replace(part, path)
        about.unlink(missing_ok=True)
        return size

    def _politely(self, url: str, params: dict[str, Any], shown: str, handle: Callable[[httpx.Response], Any],
                  headers: Callable[[], dict[str, str]] = dict) -> Any:
        """``handle`` the streamed response of GET ``url``, with the host's rate, concurrency and backoff;
        ``headers`` are asked for anew at each attempt (a resumed download's Range)."""
        limiter = self._limiter(urlsplit(url).netloc)
        for attempt in range(1, self.settings.retries + 2):
            with limiter.slot():
                try:
                    with self._http.stream("GET", url, params=params, headers=headers()) as response:
                        return handle(response)
                except httpx.TimeoutException as e:
                    problem = Transient(f"timeout after {self.settings.timeout_s}s ({type(e).__name__})")
                except httpx.TransportError as e:
                    problem = Transient(f"connection error: {type(e).__name__}: {e}")
                except Transient as e:
                    problem = e
                except Unusable as e:
                    raise RequestFailed(shown, e.reason, attempt, e.status, e.body) from None
            if attempt > self.settings.retries:
                break
            wait = self._backoff(attempt - 1, problem.retry_after)
            if wait > self.settings.backoff_max_s:
                raise RequestFailed(shown, f"{problem.reason}; the server asked to wait {wait:.0f}s, more than "
                                           f"backoff_max_s={self.settings.backoff_max_s:g}: re-run later",
                                    attempt, problem.status, problem.body)
            log.warning("%s: %s; asking again in %.1fs (attempt %d of %d)", shown, problem.reason, wait, attempt + 1,
                        self.settings.retries + 1)
            limiter.hold(wait)
        raise RequestFailed(shown, problem.reason, attempt, problem.status, problem.body)

    def get_many(self, requests: Sequence[tuple[str, dict[str, Any]]], *, parse: Parse = json_body,
                 secret: Sequence[str] = ()) -> list[Page | RequestFailed]:
        """``get`` each ``(url, params)`` with up to ``concurrency`` at once; results (or failures) in order."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.settings.concurrency,
                                            thread_name_prefix="cleanroom-harvest")

        def one(request: tuple[str, dict[str, Any]]) -> Page | RequestFailed:
            try:
                return self.get(request[0], request[1], parse=parse, secret=secret)
            except RequestFailed as e:
                return e

        return list(self._pool.map(one, requests))

    def _limiter(self, host: str) -> HostLimiter:
        with self._hosts_lock:
            if host not in self._hosts:
                self._hosts[host] = HostLimiter(self.settings, self._clock, self._sleep)
            return self._hosts[host]

    def _backoff(self, attempt: int, asked: float | None) -> float:
        return backoff(attempt, asked, self.settings.backoff_s, self.settings.backoff_max_s, self._rng)


def backoff(attempt: int, asked: float | None, backoff_s: float, backoff_max_s: float, rng: random.Random) -> float:
    """About ``backoff_s * 2**attempt`` (the upper half random, so clients that failed together do not
    return together), capped at ``backoff_max_s``; never less than the server asked."""
    delay = min(backoff_max_s, backoff_s * 2 ** attempt)
    jittered = delay / 2 + rng.uniform(0, delay / 2)
    return max(jittered, asked or 0.0)


def _check_status(response: httpx.Response, read: bool = False) -> None:
    """429 and 5xx are worth asking again (after Retry-After, when given); any other 4xx is not."""
    status = response.status_code
    if status < 400:
        return
    body = response.read()[:2000] if read else response.content
    if status in RETRY_STATUSES:
        raise Transient(f"HTTP {status}", retry_after(response.headers.get("Retry-After")), status, body)
    raise Unusable(f"HTTP {status}", status, body)


def _append_body(response: httpx.Response, part: Path, mode: str) -> int:
    """Write the body to ``part`` (``mode`` "ab": after what it holds); what arrived before a cut stays."""
    with open(part, mode) as f:
        try:
            for chunk in response.iter_bytes():
                f.write(chunk)
        except httpx.TransportError as e:
            raise Transient(f"download cut off at byte {f.tell()}: {type(e).__name__}: {e}; the next attempt asks "
                            f"for the rest", status=response.status_code) from None
        finally:
            f.flush()
            os.fsync(f.fileno())
        return f.tell()


def _validator(headers: httpx.Headers) -> str | None:
    """What If-Range may carry: a strong ETag (a weak one is not allowed there), else Last-Modified."""
    etag = headers.get("ETag")
    return etag if etag and not etag.startswith("W/") else headers.get("Last-Modified")


def _length(headers: httpx.Headers) -> int | None:
    value = headers.get("Content-Length", "")
    return int(value) if value.isdigit() else None


def _known_length(about: Path) -> int | None:
    return json.loads(about.read_text(encoding="utf-8")).get("length") if about.is_file() else None


def _range_start(value: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``."""
    unit, _, spec = (value or "").partition(" ")
    start = spec.split("-", 1)[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def _range_total(value: str | None) -> int | None:
    """TOTAL of ``Content-Range: bytes START-END/TOTAL`` or ``bytes */TOTAL``; None when unknown (``*``)."""
    total = (value or "").rpartition("/")[2]
    return int(total) if total.isdigit() else None


def reported_url(url: str, params: dict[str, Any], secret: Sequence[str]) -> str:
    """``url`` with its query, secret parameters (API keys) masked: what logs and failure records show."""
    shown = {k: (MASK if k in secret else v) for k, v in params.items()}
    return f"{url}?{urlencode(shown, doseq=True)}" if shown else url
