"""Flickr: ``flickr.photos.search`` with ``license=9,10`` (CC0, Public Domain Mark) and the extras
the flickr adapter reads (an API key is needed).

``--query``: search text (``text``). Flickr refuses a search with no criterion and serves only
the first 4,000 results of any search: narrow a large one with ``min_upload_date`` and
``max_upload_date`` in the manifest's ``params`` (a pull stopped there records ``query_too_broad``).
Writes ``photos.jsonl``, one photo a line. Flickr allows 3,600 requests an hour per key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx

from curate.harvest import paging
from curate.harvest.client import PoliteClient, Transient, Unusable, json_body
from curate.harvest.pull import Request, Step

OUTPUT = "photos.jsonl"
EXTRAS = "license,owner_name,date_taken,date_upload,description,tags,views,o_dims,url_o,url_l,url_c,url_z,url_m"
PAGING = paging.Paging(position="page", size="per_page", by_page=True, max_records=4000)
KEY = "api_key"
NEEDS_KEY = True
# Flickr says "try again" with these error codes (https://www.flickr.com/services/api/flickr.photos.search.html).
RETRY_CODES = frozenset({0, 105, 106})


def steps(client: PoliteClient, request: Request, state: dict[str, Any] | None, out: Path) -> Iterator[Step]:
    params = {"license": "9,10", **request.settings.params, "method": "flickr.photos.search", "extras": EXTRAS,
              "format": "json", "nojsoncallback": "1", KEY: request.api_key}
    if request.query is not None:
        params["text"] = request.query
    return paging.steps(client, request, f"{request.base_url}/", params, _listing, PAGING, state, secret=(KEY,))


def _listing(response: httpx.Response) -> paging.Listing:
    value = json_body(response)
    if not isinstance(value, dict):
        raise Transient("malformed page: not a response object")
    if value.get("stat") == "fail":
        problem = f"Flickr error {value.get('code')}: {value.get('message')}"
        raise Transient(problem) if value.get("code") in RETRY_CODES else Unusable(problem)
    photos = value.get("photos")
    if value.get("stat") != "ok" or not isinstance(photos, dict) or not isinstance(photos.get("photo"), list):
        raise Transient("malformed page: no photos.photo list")
    return paging.Listing(photos["photo"], paging.total(photos.get("total")))
