"""Paging through a listing API, the shape most museum APIs share: each page gives some records and
the total, and a parameter moves on (an offset in records, or a page number).

A harvester says how its API pages (``Paging``) and how to read a page (``parse`` -> ``Listing``);
``steps`` yields one ``Step`` a page. A listing ends at an empty or short page or at the total.
APIs that serve only the first N results of a query (Flickr 4,000, AIC 10,000) have ``max_records``:
reaching it with more left is a recorded failure that says to narrow the query, not a silent cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from curate.harvest.client import Parse, PoliteClient
from curate.harvest.pull import Request, Step


@dataclass(frozen=True)
class Listing:
    records: list[Any]
    total: int | None  # records the whole listing holds, when the page says
    files: dict[str, bytes] = field(default_factory=dict)  # whole files the page carries (AIC's IIIF config)


@dataclass(frozen=True)
class Paging:
    position: str  # the parameter that moves on: "skip", "start", "page"
    size: str  # the parameter of the page size: "limit", "rows", "per_page"
    by_page: bool  # position counts pages from 1 (else records from 0)
    max_records: int | None = None  # results the API serves of one query, at most


def total(value: Any) -> int | None:
    """A total as APIs send it: an int, or digits in a string (Flickr); else unknown."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


def steps(client: PoliteClient, request: Request, url: str, params: dict[str, Any], parse: Parse,
          paging: Paging, state: dict[str, Any] | None, secret: Sequence[str] = ()) -> Iterator[Step]:
    size = request.settings.page_size
    position = (state or {}).get(paging.position, 1 if paging.by_page else 0)
    while True:
        page = client.get(url, {**params, paging.position: str(position), paging.size: str(size)}, parse=parse,
                          secret=secret)
        listing: Listing = page.value
        position += 1 if paging.by_page else len(listing.records)
        reached = (position - 1) * size if paging.by_page else position
        last = len(listing.records) < size or (listing.total is not None and reached >= listing.total)
        failures = []
        if not last and paging.max_records is not None and reached + size > paging.max_records:
            failures.append({"url": page.url, "reason": "query_too_broad",
                             "detail": f"the API serves the first {paging.max_records} results of a query and this "
                                       f"one has {listing.total}: narrow it (--query, or params in the manifest)"})
            last = True
        yield Step(state=None if last else {paging.position: position}, records=listing.records,
                   pages=[(page.url, page.body, ".json")], failures=failures, files=listing.files)
        if last:
            return
