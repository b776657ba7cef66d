"""What img2dataset must keep for the rights checks: the image response's TDM headers and a ``rights`` column.

img2dataset drops the response headers once it has checked X-Robots-Tag, and its output
has no column for what a resizer finds. So ``fetch`` hands img2dataset ``Downloader``
in place of its own (by the same name swap as the resizer, see ``curate.fetch``), which
in each worker process (spawned or a Ray task, where it is unpickled):

- downloads with ``Polite.download_image``: img2dataset's own request (the same User-Agent,
  the X-Robots-Tag check), whose stream also carries the TDMRep response headers, which the
  Normaliser reads (``curate.pixels``);
- writes with ``RightsWriter``: img2dataset's parquet writer plus a ``rights`` column,
  filled from the ``embedded.Stored`` image the Normaliser returns.

It also asks politely (``Polite``): img2dataset has no per-host limit and no backoff. Each
worker process keeps one ``HostLimiter`` per host (``curate.harvest.client``'s), shared by its
download threads, at the limits ``curate.fetch`` gave it: the fetch's per-host limits divided
by the processes that run at once. A 429 or 503 is asked again after the server's
``Retry-After`` or an exponential backoff with jitter, during which the process sends that
host nothing; after ``busy_retries`` more attempts the sample fails with img2dataset's message
(``HTTP Error 429: ...``), which ``curate.fetch.fate`` maps to a reason a resumed run retries.
"""

from __future__ import annotations

import io
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

import img2dataset.downloader as downloader_module
from img2dataset.downloader import Downloader as _Downloader
from img2dataset.downloader import is_disallowed
from img2dataset.writer import ParquetSampleWriter

import pyarrow as pa

from curate.harvest.client import HostLimiter, backoff, retry_after
from curate.harvest.settings import HarvestSettings
from curate.rights import tdmrep
from curate.rights.embedded import COLUMN as RIGHTS_COLUMN

KEPT_HEADERS = (tdmrep.HEADER, tdmrep.POLICY_HEADER)


class Original(io.BytesIO):
    """The downloaded bytes, with the response headers the rights checks read (lower-case names)."""

    def __init__(self, data: bytes, headers: dict[str, str]):
        super().__init__(data)
        self.headers = headers


BUSY_STATUSES = frozenset({429, 503})  # how servers say "slow down"; both may carry Retry-After


@dataclass(frozen=True)
class HostLimits:
    """What one worker process keeps to, per host (its share of the fetch's limits); None: no limit."""

    requests_per_second: float | None = None
    concurrency: int | None = None
    busy_retries: int = 0
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0


@dataclass(frozen=True)
class _Answer:
    data: Original | None
    error: str | None
    busy: bool = False  # a 429 or 503
    asked: float | None = None  # its Retry-After, in seconds


def _ask(url, timeout, user_agent_token, disallowed_header_directives) -> _Answer:
    """img2dataset 1.47's ``download_image`` request, keeping the TDMRep headers with the bytes."""
    user_agent_string = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"
    if user_agent_token:
        user_agent_string += f" (compatible; {user_agent_token}; +https://github.com/rom1504/img2dataset)"
    try:
        request = urllib.request.Request(url, data=None, headers={"User-Agent": user_agent_string})
        with urllib.request.urlopen(request, timeout=timeout) as r:
            if disallowed_header_directives and is_disallowed(r.headers, user_agent_token,
                                                              disallowed_header_directives):
                return _Answer(None, "Use of image disallowed by X-Robots-Tag directive")
            headers = {name: r.headers[name] for name in KEPT_HEADERS if r.headers.get(name) is not None}
            return _Answer(Original(r.read(), headers), None)
    except urllib.error.HTTPError as err:
        busy = err.code in BUSY_STATUSES
        return _Answer(None, str(err), busy, retry_after(err.headers.get("Retry-After")) if busy else None)
    except Exception as err:  # noqa: BLE001  img2dataset's contract: the error's text is the sample's message
        return _Answer(None, str(err))


class Polite:
    """``download_image`` for one worker process: its threads share one limiter per host."""

    def __init__(self, limits: HostLimits):
        self.limits = limits
        self._hosts: dict[str, HostLimiter] = {}
        self._lock = threading.Lock()
        self._rng = random.Random()

    def download_image(self, row, timeout, user_agent_token, disallowed_header_directives):
        key, url = row
        limiter = self._limiter(url)
        for attempt in range(self.limits.busy_retries + 1):
            with limiter.slot():
                answer = _ask(url, timeout, user_agent_token, disallowed_header_directives)
            if not answer.busy or attempt == self.limits.busy_retries:
                break
            wait = backoff(attempt, answer.asked, self.limits.backoff_s, self.limits.backoff_max_s, self._rng)
            if wait > self.limits.backoff_max_s:
                return key, None, (f"{answer.error} (the server asked to wait {wait:.0f}s, more than "
                                   f"backoff_max_s={self.limits.backoff_max_s:g})")
            limiter.hold(wait)  # every thread of this process waits before its next request to the host
        if answer.busy:
            return key, None, f"{answer.error} (after {attempt + 1} attempt{'s' if attempt else ''})"
        return key, answer.data, answer.error

    def _limiter(self, url: str) -> HostLimiter:
        """The host's limiter; with limits off it spaces and bounds nothing, but holds the host after a 429."""
        host = urlsplit(url).netloc.lower()
        with self._lock:
            if host not in self._hosts:
                rule = HarvestSettings(requests_per_second=self.limits.requests_per_second or float("inf"),
                                       concurrency=self.limits.concurrency or 2 ** 31 - 1)
                self._hosts[host] = HostLimiter(rule, time.monotonic, time.sleep)
            return self._hosts[host]


_POLITE: dict[HostLimits, Polite] = {}  # per worker process: its threads, and its later shards, share them
_POLITE_LOCK = threading.Lock()


def polite(limits: HostLimits) -> Polite:
    with _POLITE_LOCK:
        return _POLITE.setdefault(limits, Polite(limits))


class RightsWriter(ParquetSampleWriter):
    """img2dataset's parquet writer with the Normaliser's findings in a ``rights`` column (JSON or null)."""

    def __init__(self, shard_id, output_folder, save_caption, oom_shard_count, schema, encode_format):
        super().__init__(shard_id, output_folder, save_caption, oom_shard_count,
                         schema.append(pa.field(RIGHTS_COLUMN, pa.string())), encode_format)

    def write(self, img_str, key, caption, meta):
        rights = getattr(img_str, "rights", None)
        super().write(None if img_str is None else bytes(img_str), key, caption, {**meta, RIGHTS_COLUMN: rights})


class Downloader(_Downloader):
    def __init__(self, *args, sample_writer_class, limits: HostLimits = HostLimits(), **kwargs):
        self.limits = limits
        if not callable(getattr(downloader_module, "download_image", None)):
            # Else the TDM headers would silently go unread: refuse, as fetch does for the resizer.
            raise RuntimeError("img2dataset.downloader has no download_image to keep the TDM headers with: "
                               "install img2dataset==1.47.0 (pip install -c constraints.txt ...)")
        if sample_writer_class is not ParquetSampleWriter:
            raise ValueError(f"curate.rights.download keeps its column in parquet output only, "
                             f"not {sample_writer_class.__name__}")
        super().__init__(*args, sample_writer_class=RightsWriter, **kwargs)

    def download_shard(self, row):
        # This worker process's img2dataset downloads through ours from now on, at this fetch's limits.
        downloader_module.download_image = polite(self.limits).download_image
        return super().download_shard(row)
