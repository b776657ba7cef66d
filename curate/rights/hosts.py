"""What image hosts publish for every file they serve: robots.txt and the TDMRep ``/.well-known/tdmrep.json``.

Fetched once per host (scheme, name and port) per run, before any image of the host is
downloaded, and cached in the run folder (``work/hosts/*.parquet``, one row per host, the
files as the host sent them), so every process of the run and a resumed run read the
same rules without asking again. Each host gets one request per file, with its own
timeout and a User-Agent naming our token; hosts are asked in parallel, a host's two
files one after the other.

robots.txt follows RFC 9309: a 4xx answer (no file) allows everything; a 5xx answer or
no answer at all means the host cannot say, so everything is disallowed.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from curate.io import write_parquet_atomic
from curate.rights import tdmrep

ROBOTS_PATH = "/robots.txt"
TDMREP_PATH = "/.well-known/tdmrep.json"
MAX_BYTES = 500 * 1024  # RFC 9309: crawlers must read at least 500 KiB of a robots.txt
PARALLEL_HOSTS = 8

SCHEMA = pa.schema([
    pa.field("host", pa.string(), nullable=False),  # scheme://netloc, lower case
    pa.field("robots_status", pa.int32()),  # HTTP status; null when no answer came
    pa.field("robots_error", pa.string()),
    pa.field("robots", pa.string()),
    pa.field("tdmrep_status", pa.int32()),
    pa.field("tdmrep_error", pa.string()),
    pa.field("tdmrep", pa.string()),
])


@dataclass(frozen=True)
class Politeness:
    timeout: float
    user_agent_token: str

    @property
    def user_agent(self) -> str:
        return f"{self.user_agent_token} (rights check; robots.txt and tdmrep.json)"


# scheme://netloc of a URL (a regular expression: urlsplit costs more than the whole check)
HOST_PATTERN = r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*"
_HOST = re.compile(HOST_PATTERN)


WEB_SCHEMES = ("http://", "https://")


def is_web(url: str) -> bool:
    """Only a web server publishes robots.txt and tdmrep.json; a file:// URL (the opt-in store) has neither."""
    return url.lower().startswith(WEB_SCHEMES)


def host_of(url: str) -> str:
    """The host a URL's rules are cached under: its scheme and netloc, lower case."""
    found = _HOST.match(url)
    if found is None:
        raise LookupError(f"{url!r} names no host (scheme://host expected)")
    return found.group(0).lower()


@dataclass(frozen=True)
class Answer:
    status: int | None
    error: str | None
    body: str | None


def ask(url: str, politeness: Politeness) -> Answer:
    """GET ``url``: the status and body of the answer (an HTTP error is an answer too), or why none came."""
    request = urllib.request.Request(url, headers={"User-Agent": politeness.user_agent})
    try:
        with urllib.request.urlopen(request, timeout=politeness.timeout) as response:
            return Answer(response.status, None, response.read(MAX_BYTES).decode("utf-8", "replace"))
    except urllib.error.HTTPError as e:
        return Answer(e.code, str(e), None)
    except Exception as e:  # noqa: BLE001  refused, timed out, DNS: the host gave no answer
        return Answer(None, f"{type(e).__name__}: {e}", None)


def _host_row(host: str, politeness: Politeness) -> dict[str, Any]:
    robots = ask(host + ROBOTS_PATH, politeness)
    tdm = ask(host + TDMREP_PATH, politeness)
    return dict(host=host, robots_status=robots.status, robots_error=robots.error, robots=robots.body,
                tdmrep_status=tdm.status, tdmrep_error=tdm.error, tdmrep=tdm.body)


class HostRules:
    """One host's robots.txt and TDMRep rules, read from its cached row."""

    def __init__(self, row: dict[str, Any]):
        self.row = row

    @cached_property
    def _robots(self):
        from protego import Protego

        return Protego.parse(self.row["robots"] or "")

    def robots_refusal(self, url: str, tokens: Iterable[str]) -> str | None:
        """Why robots.txt forbids ``url`` to any of ``tokens``; None when it allows all of them."""
        status, where = self.row["robots_status"], self.row["host"] + ROBOTS_PATH
        if status is None or status >= 500:
            # RFC 9309 2.3.1.4: an unreachable robots.txt disallows the whole host.
            return f"{where} could not be read ({self.row['robots_error']}): the host is taken as disallowed"
        if status >= 400 or self.row["robots"] is None:
            return None
        refused = [t for t in tokens if not self._robots.can_fetch(url, t)]
        return f"{where} disallows {url} for user-agent {', '.join(refused)}" if refused else None

    def crawl_delay(self, token: str) -> float | None:
        """The seconds robots.txt asks ``token`` to wait between requests; None when it asks nothing."""
        if self.row["robots_status"] != 200 or self.row["robots"] is None:
            return None
        delay = self._robots.crawl_delay(token)
        return float(delay) if delay is not None else None

    @cached_property
    def _tdm(self) -> list[tdmrep.Rule] | str:
        if self.row["tdmrep_status"] != 200 or self.row["tdmrep"] is None:
            return []
        try:
            return tdmrep.parse(self.row["tdmrep"])
        except ValueError as e:
            return f"{self.row['host']}{TDMREP_PATH}: {e}"

    def tdm_reservation(self, url: str) -> tuple[tdmrep.Rule | None, str | None]:
        """The host's tdmrep.json rule for ``url`` (None when none matches) and why the file was unusable."""
        rules = self._tdm
        if isinstance(rules, str):
            return None, rules
        path = re.split("[?#]", url[len(host_of(url)):], maxsplit=1)[0]
        return tdmrep.matching(rules, path or "/"), None


def fetch_rules(host: str, politeness: Politeness) -> HostRules:
    """A host's rules asked now and kept by the caller only (a redirect's target host, not in the run's cache)."""
    return HostRules(_host_row(host, politeness))


class HostCache:
    """The run's cached host rules under ``folder``: fetched for new hosts, read for known ones."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def _files(self) -> list[Path]:
        return sorted(self.folder.glob("*.parquet")) if self.folder.is_dir() else []

    def known(self) -> set[str]:
        return {h for f in self._files() for h in pq.read_table(f, columns=["host"])["host"].to_pylist()}

    def ensure(self, hosts: Iterable[str], politeness: Politeness) -> int:
        """Fetch the rules of every host (``host_of``'s form) not cached yet; returns how many were asked."""
        new = sorted(set(hosts) - self.known())
        if not new:
            return 0
        with ThreadPoolExecutor(min(PARALLEL_HOSTS, len(new))) as pool:
            rows = list(pool.map(lambda h: _host_row(h, politeness), new))
        name = hashlib.sha256(json.dumps(new).encode()).hexdigest()[:16]
        write_parquet_atomic(pa.Table.from_pylist(rows, schema=SCHEMA), self.folder / f"hosts-{name}.parquet")
        self.__dict__.pop("_rules", None)  # read again with the new hosts
        return len(new)

    @cached_property
    def _rules(self) -> dict[str, HostRules]:
        return {row["host"]: HostRules(row) for f in self._files() for row in pq.read_table(f).to_pylist()}

    def rules(self, url: str) -> HostRules:
        host = host_of(url)
        found = self._rules.get(host)
        if found is None:
            raise LookupError(f"{self.folder}: no cached robots.txt/tdmrep.json for host {host} "
                              "(rights.before_fetch fetches them before the images)")
        return found

    def __getstate__(self) -> dict[str, Any]:
        # Pickled to Ray workers: the path only; each worker reads the (small) cache once.
        return {"folder": self.folder}
