"""Art Institute of Chicago: the public API's artworks, with ``fields`` and the IIIF config.

``--query``: search text (``/artworks/search?q=...``; the API serves the first 10,000 hits of
a search); none pages through ``/artworks``. Writes ``artworks.jsonl`` (one artwork a line) and
``config.json`` (the response's ``config``, whose ``iiif_url`` the aic adapter builds image URLs
from). AIC asks anonymous clients for at most 60 requests a minute (https://api.artic.edu/docs/).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import httpx

from curate.harvest import paging
from curate.harvest.client import PoliteClient, Transient, json_body
from curate.harvest.pull import Request, Step

OUTPUT = "artworks.jsonl"
CONFIG = "config.json"
# What the aic adapter reads, and the thumbnail (its width and height are the image's).
FIELDS = ("id", "title", "image_id", "alt_image_ids", "is_public_domain", "copyright_notice", "artist_display",
          "artist_title", "date_display", "medium_display", "classification_title", "artwork_type_title",
          "place_of_origin", "department_title", "style_title", "dimensions", "inscriptions", "credit_line",
          "main_reference_number", "thumbnail", "description", "api_link")
SEARCH_LIMIT = 10_000


def steps(client: PoliteClient, request: Request, state: dict[str, Any] | None, out: Path) -> Iterator[Step]:
    params = {**request.settings.params, "fields": ",".join(FIELDS)}
    if request.query is None:
        return paging.steps(client, request, f"{request.base_url}/artworks", params, _listing,
                            paging.Paging(position="page", size="limit", by_page=True), state)
    return paging.steps(client, request, f"{request.base_url}/artworks/search", {**params, "q": request.query},
                        _listing, paging.Paging(position="page", size="limit", by_page=True,
                                                max_records=SEARCH_LIMIT), state)


def _listing(response: httpx.Response) -> paging.Listing:
    value = json_body(response)
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise Transient("malformed page: no data list")
    config, pagination = value.get("config"), value.get("pagination")
    files = {CONFIG: json.dumps(config, indent=4).encode()} if isinstance(config, dict) and config.get("iiif_url") \
        else {}
    return paging.Listing(value["data"], paging.total(pagination.get("total")) if isinstance(pagination, dict)
                          else None, files)
