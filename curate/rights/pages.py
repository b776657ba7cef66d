"""The TDMRep signals of the HTML page a record links to (its ``page_url``), read once per page per run.

A rights holder may reserve text and data mining in the page itself (W3C TDMRep, HTML
section): ``<meta name="tdm-reservation" content="1">`` and ``<meta name="tdm-policy"
content="URL">`` in its head, or the same names as response headers. Each distinct page
URL is asked for once per run, before any image is downloaded, and what it said is cached
in the run folder (``work/pages/pages-*.parquet``), so the filter step and a resumed run
read the same answer without asking again.

Politeness, as for the host files (``curate.rights.hosts``): a User-Agent naming our
token, the fetch timeout, the page host's robots.txt (a page it disallows to our token,
or a host whose robots.txt could not be read, is not requested), one request at a time per
host with ``interval`` seconds between them (longer when robots.txt asks for a
Crawl-delay), hosts in parallel. A redirect is followed only to an http(s) URL its host's
robots.txt allows (a host the run has not cached is asked once per batch of pages), at the same
pace per target host. Only the head is read: the body is streamed and parsing stops at
``</head>`` or ``<body>``, or after ``max_bytes``.

The cache is read per block, never whole: ``before_fetch`` finds the source's pages not
cached yet with DuckDB (an anti join, which spills), asks them, writing a part file every
``CHUNK_PAGES`` pages, then merges the parts into one sorted by page URL in row groups of
``GROUP_ROWS``. A lookup bisects the row groups' URL ranges (from the parquet footer, the
only thing a worker holds: two URLs per ``GROUP_ROWS`` pages) and reads only the row groups
holding one of the block's pages: at most ``GROUP_ROWS`` rows read per page looked up,
whatever order the records come in, so the run's lookups cost linear in its records.
"""

from __future__ import annotations

import bisect
import codecs
import hashlib
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterable

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.io import atomic_path
from curate.rights import tdmrep
from curate.rights.hosts import PARALLEL_HOSTS, HostCache, HostRules, Politeness, fetch_rules, host_of, is_web

GROUP_ROWS = 128
CHUNK_PAGES = 2_000  # pages asked between two writes of the cache
READ_CHUNK = 8192
HTML_TYPES = ("text/html", "application/xhtml+xml")
SCHEMA = pa.schema([
    pa.field("page", pa.string(), nullable=False),
    pa.field("status", pa.int32()),  # HTTP status; null when no answer came or the page was not requested
    pa.field("error", pa.string()),  # why the page could not be read (or was not requested)
    pa.field("reservation", pa.string()),  # the tdm-reservation value as the page gave it; null when none
    pa.field("policy", pa.string()),
    pa.field("found_in", pa.string()),  # "meta" or "header": where the reservation was given
])


@dataclass(frozen=True)
class PageSettings:
    interval: float  # seconds between two requests to one host
    max_bytes: int  # of a page read looking for the end of its head


class _HeadParser(HTMLParser):
    """The first tdm-reservation and tdm-policy meta elements of a page's head."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: dict[str, str] = {}
        self.done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.done:  # the rest of a chunk fed after the head ended
            return
        if tag == "body":
            self.done = True
        elif tag == "meta":
            named = {k: (v or "").strip() for k, v in attrs}
            name = named.get("name", "").lower()
            if name in (tdmrep.HEADER, tdmrep.POLICY_HEADER) and "content" in named:
                self.found.setdefault(name, named["content"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self.done = True


def _pause(interval: float, rules: HostRules, politeness: Politeness) -> float:
    """Seconds between two requests to one host: ``interval``, or the longer Crawl-delay its robots.txt asks."""
    return max(interval, rules.crawl_delay(politeness.user_agent_token) or 0.0)


class RedirectTargets:
    """The hosts that pages redirect to, shared by the threads asking hosts in parallel for one batch of pages:
    their rules (the run's host cache, else asked once per host and kept here; nothing is written to the
    cache), and their pace (many pages' redirects to one host, say a handle or DOI resolver, are spaced as
    one host's pages are)."""

    def __init__(self, politeness: Politeness, hosts: HostCache, interval: float):
        self.politeness, self.hosts, self.interval = politeness, hosts, interval
        self._asked: dict[str, HostRules] = {}
        self._next: dict[str, float] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _host_lock(self, host: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(host, threading.Lock())

    def pace(self, url: str, rules: HostRules) -> None:
        """Wait until ``url``'s host (whose ``rules`` these are) may be asked again: ``interval`` (or its
        Crawl-delay) after the last time."""
        host = host_of(url)
        pause = _pause(self.interval, rules, self.politeness)
        with self._host_lock(host):  # held while waiting: one redirect at a time per host
            time.sleep(max(0.0, self._next.get(host, 0.0) - time.monotonic()))
            self._next[host] = time.monotonic() + pause

    def rules(self, url: str) -> HostRules:
        try:
            return self.hosts.rules(url)
        except LookupError:
            pass
        host = host_of(url)
        with self._host_lock(host):  # one request per host however many pages redirect there at once
            if host not in self._asked:
                self._asked[host] = fetch_rules(host, self.politeness)
            return self._asked[host]


class _AllowedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an http(s) URL the target host's robots.txt lets our token read."""

    def __init__(self, targets: RedirectTargets):
        self.targets = targets

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib's signature)
        if not is_web(newurl):  # urllib would follow ftp://
            raise urllib.error.URLError(f"redirect to {newurl} not followed: not an http(s) URL")
        rules = self.targets.rules(newurl)
        refusal = rules.robots_refusal(newurl, [self.targets.politeness.user_agent_token])
        if refusal is not None:
            raise urllib.error.URLError(f"redirect to {newurl} not followed: {refusal}")
        self.targets.pace(newurl, rules)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def read_page(url: str, politeness: Politeness, max_bytes: int, targets: RedirectTargets) -> dict[str, Any]:
    """GET ``url`` and read its TDMRep signals: a cache row (SCHEMA). Redirects are followed where the
    target's robots.txt allows it."""
    request = urllib.request.Request(url, headers={
        "User-Agent": f"{politeness.user_agent_token} (rights check; TDMRep page metadata)"})
    opener = urllib.request.build_opener(_AllowedRedirects(targets))
    try:
        with opener.open(request, timeout=politeness.timeout) as response:
            headers = {name: response.headers.get(name) for name in (tdmrep.HEADER, tdmrep.POLICY_HEADER)}
            meta = _head_meta(response, max_bytes) if response.headers.get_content_type() in HTML_TYPES else {}
            status = response.status
    except urllib.error.HTTPError as e:
        return cache_row(url, status=e.code, error=f"HTTP {e.code} {e.reason}")
    except Exception as e:  # noqa: BLE001  refused, timed out, DNS, a connection cut mid-page: no answer
        return cache_row(url, error=f"{type(e).__name__}: {e}")
    if meta.get(tdmrep.HEADER) is not None:
        return cache_row(url, status=status, reservation=meta[tdmrep.HEADER],
                         policy=meta.get(tdmrep.POLICY_HEADER), found_in="meta")
    if headers[tdmrep.HEADER] is not None:
        return cache_row(url, status=status, reservation=headers[tdmrep.HEADER].strip(),
                         policy=headers[tdmrep.POLICY_HEADER], found_in="header")
    return cache_row(url, status=status)


def _head_meta(response: Any, max_bytes: int) -> dict[str, str]:
    parser = _HeadParser()
    decoder = codecs.getincrementaldecoder(_codec(response.headers.get_content_charset()))("replace")
    read = 0
    while not parser.done and read < max_bytes:
        chunk = response.read(min(READ_CHUNK, max_bytes - read))
        if not chunk:
            break
        read += len(chunk)
        parser.feed(decoder.decode(chunk))
    return parser.found


def _codec(charset: str | None) -> str:
    try:
        return codecs.lookup(charset or "utf-8").name
    except LookupError:  # a charset Python does not know: the markup we look for is ASCII anyway
        return "utf-8"


def cache_row(page: str, **fields: Any) -> dict[str, Any]:
    """A row of the cache (SCHEMA): the fields not given are null."""
    return {name: fields.get(name) for name in SCHEMA.names} | {"page": page}


@dataclass(frozen=True)
class Page:
    """What one page said, as the tdm_reservation filter weighs it."""

    row: dict[str, Any]

    @property
    def reservation(self) -> str | None:
        return self.row["reservation"]

    @property
    def reserved(self) -> bool:
        return self.reservation == str(tdmrep.RESERVED)

    @property
    def malformed(self) -> bool:
        return self.reservation is not None and self.reservation not in ("0", "1")

    @property
    def policy(self) -> str | None:
        return self.row["policy"]

    def evidence(self) -> str:
        """Where the page gave its tdm-reservation (the policy URL aside)."""
        if self.row["found_in"] == "meta":
            return f'page {self.row["page"]} has <meta name="tdm-reservation" content="{self.reservation}">'
        return f"page {self.row['page']} was served with tdm-reservation: {self.reservation}"

    def note(self) -> str | None:
        """Why the page said nothing, when it could not be read; None when it was read."""
        if self.row["error"] is None:
            return None
        return (f"tdm_reservation: page {self.row['page']} could not be read ({self.row['error']}); "
                "an unreadable page is not a TDM reservation, so this check did not reject the record")


class PageCache:
    """The run's cached page signals under ``folder``: fetched for new pages, read for known ones."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def _parts(self) -> list[Path]:
        return sorted(self.folder.glob("pages-*.parquet")) if self.folder.is_dir() else []

    @cached_property
    def _ranges(self) -> list[tuple[Path, pq.FileMetaData, list[str] | None, list[str] | None]]:
        """Each part's footer, with its row groups' lowest and highest page URL (None: a footer without them)."""
        index: list[Any] = []
        for part in self._parts():
            metadata = pq.ParquetFile(part).metadata
            stats = [metadata.row_group(i).column(0).statistics for i in range(metadata.num_row_groups)]
            if all(s is not None and s.has_min_max for s in stats):
                index.append((part, metadata, [s.min for s in stats], [s.max for s in stats]))
            else:
                index.append((part, metadata, None, None))
        return index

    def lookup(self, pages: Iterable[str]) -> dict[str, Page]:
        """The cached signals of those of ``pages`` that were asked for; the others are left out."""
        wanted = sorted(set(pages))
        if not wanted:
            return {}
        found: dict[str, Page] = {}
        values = pa.array(wanted, pa.string())
        for part, metadata, lows, highs in self._ranges:
            holding = (range(metadata.num_row_groups) if lows is None or highs is None
                       else _groups_holding(wanted, lows, highs))
            if holding:  # the footer read once: parsing it again per block would cost the cache's size
                table = pq.ParquetFile(part, metadata=metadata).read_row_groups(sorted(holding), use_threads=False)
                table = table.filter(pc.is_in(table["page"], value_set=values))
                found.update((row["page"], Page(row)) for row in table.to_pylist())
        return found

    def missing(self, pages: pa.ChunkedArray | pa.Array) -> list[str]:
        """The distinct web pages of ``pages`` not cached yet, by DuckDB (which spills): millions of them fit."""
        con = duckdb.connect()
        con.register("wanted", pa.table({"page": pages}).cast(pa.schema([pa.field("page", pa.string())])))
        parts = [str(p) for p in self._parts()]
        con.register("cached", con.read_parquet(parts).select("page") if parts
                     else con.from_arrow(SCHEMA.empty_table().select(["page"])))
        return [page for (page,) in con.execute(
            "SELECT DISTINCT page FROM wanted w ANTI JOIN cached c USING (page) "
            "WHERE w.page IS NOT NULL AND (lower(w.page) LIKE 'http://%' OR lower(w.page) LIKE 'https://%') "
            "ORDER BY page").fetchall()]

    def ensure(self, pages: pa.ChunkedArray | pa.Array, politeness: Politeness, settings: PageSettings,
               hosts: HostCache) -> int:
        """Ask every page not cached yet (their hosts' robots.txt in ``hosts`` already); returns how many.

        Written a part per ``CHUNK_PAGES`` (an interrupted run keeps what it asked), then merged into
        one part sorted by page URL, which the filters' lookups read."""
        new = self.missing(pages)
        for start in range(0, len(new), CHUNK_PAGES):
            self.write(_ask(new[start:start + CHUNK_PAGES], politeness, settings, hosts))
        if len(self._parts()) > 1:
            self._merge()
        return len(new)

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Add ``rows`` (SCHEMA) to the cache as a part of their own."""
        table = pa.Table.from_pylist(sorted(rows, key=lambda row: row["page"]), schema=SCHEMA)
        name = hashlib.sha256("\n".join(table["page"].to_pylist()).encode()).hexdigest()[:16]
        with atomic_path(self.folder / f"pages-{name}.parquet") as tmp, _writer(tmp) as writer:
            writer.write_table(table, row_group_size=GROUP_ROWS)
        self.__dict__.pop("_ranges", None)  # read again with the new part

    def _merge(self) -> None:
        """Every part as one, sorted by page URL (DuckDB sorts, spilling to disk); then the old parts go.
        Killed in between, both are there: the same rows twice, which a lookup and the next merge fold."""
        parts = self._parts()
        con = duckdb.connect()
        merged = con.read_parquet([str(p) for p in parts]).query(
            "cache", "SELECT DISTINCT ON (page) * FROM cache ORDER BY page")
        name = hashlib.sha256("\n".join(p.name for p in parts).encode()).hexdigest()[:16]
        with atomic_path(self.folder / f"pages-{name}.parquet") as tmp, _writer(tmp) as writer:
            for batch in merged.fetch_arrow_reader(GROUP_ROWS * 64):
                writer.write_table(pa.Table.from_batches([batch]).cast(SCHEMA), row_group_size=GROUP_ROWS)
        for part in parts:
            if part.name != f"pages-{name}.parquet":
                part.unlink()
        self.__dict__.pop("_ranges", None)

    def __getstate__(self) -> dict[str, Any]:
        # Pickled to Ray workers: the path only; each worker reads the footers once.
        return {"folder": self.folder}


def _writer(path: Path) -> pq.ParquetWriter:
    # Statistics of the page column only: its row groups' URL ranges are the cache's index. Row groups
    # this small read faster without dictionaries (a lookup reads a few of them).
    return pq.ParquetWriter(path, SCHEMA, write_statistics=["page"], use_dictionary=False)


def _groups_holding(wanted: list[str], lows: list[str], highs: list[str]) -> set[int]:
    """The row groups (sorted, not overlapping) whose URL range holds one of ``wanted``: a bisect each."""
    holding = set()
    for page in wanted:
        group = bisect.bisect_right(lows, page) - 1
        if group >= 0 and page <= highs[group]:
            holding.add(group)
    return holding


def _ask(pages: list[str], politeness: Politeness, settings: PageSettings, hosts: HostCache) -> list[dict[str, Any]]:
    """Cache rows of ``pages``: hosts in parallel, each host's pages one after another."""
    by_host: dict[str, list[str]] = {}
    for page in pages:
        by_host.setdefault(host_of(page), []).append(page)
    targets = RedirectTargets(politeness, hosts, settings.interval)
    with ThreadPoolExecutor(min(PARALLEL_HOSTS, len(by_host))) as pool:
        asked = pool.map(lambda listed: _ask_host(listed, politeness, settings, hosts, targets), by_host.values())
        return [row for rows in asked for row in rows]


def _ask_host(pages: list[str], politeness: Politeness, settings: PageSettings, hosts: HostCache,
              targets: RedirectTargets) -> list[dict[str, Any]]:
    """One host's pages, one after another, ``settings.interval`` (or its Crawl-delay) apart."""
    rules = hosts.rules(pages[0])
    pause = _pause(settings.interval, rules, politeness)
    rows, last = [], None
    for page in pages:
        refusal = rules.robots_refusal(page, [politeness.user_agent_token])
        if refusal is not None:
            rows.append(cache_row(page, error=f"not requested: {refusal}"))
            continue
        if last is not None:
            time.sleep(max(0.0, last + pause - time.monotonic()))
        last = time.monotonic()
        rows.append(read_page(page, politeness, settings.max_bytes, targets))
    return rows
