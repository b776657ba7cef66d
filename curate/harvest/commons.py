"""Wikimedia Commons: the MediaWiki Action API, ``prop=imageinfo`` with ``extmetadata``.

``--query``: ``Category:NAME`` walks that category's files (``generator=categorymembers``), any
other text is a full-text search of the File namespace (``generator=search``), none lists every
file (``generator=allimages``). Writes ``pages.jsonl``, one page object a line, which the commons
adapter reads.

Bot etiquette (https://www.mediawiki.org/wiki/API:Etiquette): requests in series, a User-Agent
with a contact, and ``maxlag``, so that the API answers "lagged, retry after N s" when its
replicas fall behind instead of adding load; that answer is waited out like a 503.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx

from curate.harvest.client import PoliteClient, Transient, Unusable, json_body, retry_after
from curate.harvest.pull import Request, Step

OUTPUT = "pages.jsonl"
IIPROP = "url|size|mime|mediatype|sha1|extmetadata"
MAXLAG_S = 5
FILE_NAMESPACE = "6"


def steps(client: PoliteClient, request: Request, state: dict[str, Any] | None, out: Path) -> Iterator[Step]:
    params = {**query_params(request.query, request.settings.page_size), **request.settings.params}
    resume = (state or {}).get("continue", {})
    while True:
        # With imageinfo, one generator batch may span several responses (each giving some of its pages'
        # imageinfo); the batch is one step, so that no page is written before all of it has arrived.
        batch: dict[str, dict] = {}
        pages = []
        while True:
            page = client.get(request.base_url, {**params, **resume}, parse=_response)
            pages.append((page.url, page.body, ".json"))
            for key, found in _pages(page.value):
                if isinstance(found, dict) and isinstance(batch.get(key), dict):
                    batch[key].update(found)
                else:
                    batch[key] = found  # not a page object: the adapter rejects it with its reason
            resume = page.value.get("continue")
            if resume is None or "batchcomplete" in page.value:
                break
        yield Step(state={"continue": resume} if resume else None, records=list(batch.values()), pages=pages)
        if not resume:
            return


def query_params(query: str | None, limit: int) -> dict[str, str]:
    """The generator for ``query`` (see the module docstring), with imageinfo and maxlag."""
    params = {"action": "query", "format": "json", "maxlag": str(MAXLAG_S), "prop": "imageinfo", "iiprop": IIPROP,
              "continue": ""}
    if query is None:
        return {**params, "generator": "allimages", "gailimit": str(limit)}
    if query.lower().startswith("category:"):
        return {**params, "generator": "categorymembers", "gcmtitle": query, "gcmtype": "file",
                "gcmlimit": str(limit)}
    return {**params, "generator": "search", "gsrsearch": query, "gsrnamespace": FILE_NAMESPACE,
            "gsrlimit": str(limit)}


def _response(response: httpx.Response) -> dict[str, Any]:
    value = json_body(response)
    if not isinstance(value, dict):
        raise Transient(f"malformed page: a JSON {type(value).__name__}, not an API response")
    error = value.get("error")
    if isinstance(error, dict) and error.get("code") == "maxlag":
        raise Transient(f"maxlag: {error.get('info', 'replication lag')}",
                        retry_after(response.headers.get("Retry-After")) or MAXLAG_S)
    if error is not None:
        raise Unusable(f"API error: {error}")
    resume = value.get("continue")
    if resume is not None and not (isinstance(resume, dict) and all(isinstance(v, str) for v in resume.values())):
        raise Transient(f"malformed page: continue is {resume!r}, not an object of strings")
    query = value.get("query", {})
    if not isinstance(query, dict) or not isinstance(query.get("pages", {}), (dict, list)):
        raise Transient("malformed page: query.pages is neither an object nor a list")
    return value


def _pages(value: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """``(key, page)`` per page: keyed by the API's own key (formatversion 1) or the pageid (2)."""
    pages = value.get("query", {}).get("pages", {})
    if isinstance(pages, dict):
        yield from pages.items()
        return
    for i, page in enumerate(pages):
        key = page.get("pageid") if isinstance(page, dict) else None
        yield (str(key) if key is not None else f"#{i}"), page
