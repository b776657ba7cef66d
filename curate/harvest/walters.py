"""Walters Art Museum: the collection API's objects (``/objects``), paged with ``Page`` and ``pageSize``.

Every request carries the API key (``apikey``, from the environment variable the manifest names).
``--query``: an object title (``Title``); none takes every object the manifest's ``params`` admit.
Writes ``objects.jsonl``, one element of a response's ``Items`` a line, which the walters adapter
reads. See github.com/WaltersArtMuseum/api-thewalters-org (``objects-get.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx

from curate.harvest import paging
from curate.harvest.client import PoliteClient, Transient, json_body
from curate.harvest.pull import Request, Step

OUTPUT = "objects.jsonl"
NEEDS_KEY = True
KEY = "apikey"
# The API sends no total: a listing ends at a short or empty page.
PAGING = paging.Paging(position="Page", size="pageSize", by_page=True)


def steps(client: PoliteClient, request: Request, state: dict[str, Any] | None, out: Path) -> Iterator[Step]:
    query = {"Title": request.query} if request.query is not None else {}
    params = {**request.settings.params, **query, KEY: request.api_key}
    return paging.steps(client, request, f"{request.base_url}/objects", params, _listing, PAGING, state, secret=(KEY,))


def _listing(response: httpx.Response) -> paging.Listing:
    value = json_body(response)
    if not isinstance(value, dict) or not isinstance(value.get("Items"), list):
        raise Transient("malformed page: no Items list")
    return paging.Listing(value["Items"], None)
