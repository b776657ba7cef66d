"""Finna: the search API, with the manifest's rights filter (by default: images free to use).

``--query``: search text (``lookfor``); none searches everything the filters admit. Paged with
``page`` and ``limit`` (100 at most); the fields the finna adapter reads are asked for by name.
Writes ``records.jsonl``, one record a line. See https://api.finna.fi/swagger-ui/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx

from curate.harvest import paging
from curate.harvest.client import PoliteClient, Transient, json_body
from curate.harvest.pull import Request, Step

OUTPUT = "records.jsonl"
FIELDS = ["id", "title", "shortTitle", "images", "imageRights", "nonPresenterAuthors", "presenters", "year",
          "humanReadablePublicationDates", "subjects", "summary", "formats", "buildings", "languages", "onlineUrls"]
PAGING = paging.Paging(position="page", size="limit", by_page=True)


def steps(client: PoliteClient, request: Request, state: dict[str, Any] | None, out: Path) -> Iterator[Step]:
    params = {**request.settings.params, "lookfor": request.query or "", "field[]": FIELDS}
    return paging.steps(client, request, f"{request.base_url}/search", params, _listing, PAGING, state)


def _listing(response: httpx.Response) -> paging.Listing:
    value = json_body(response)
    if not isinstance(value, dict) or value.get("status") != "OK":
        raise Transient(f"malformed page: status {value.get('status') if isinstance(value, dict) else value!r}")
    found = value.get("records", [])  # a page past the end has no "records"
    if not isinstance(found, list):
        raise Transient("malformed page: records is not a list")
    return paging.Listing(found, paging.total(value.get("resultCount")))
