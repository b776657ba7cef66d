"""Cleveland Museum of Art: the Open Access API's artworks, paged with ``skip`` and ``limit``.

``--query``: search text (``q``); none takes every artwork the manifest's ``params`` admit (by
default CC0 artworks with an image). Writes ``artworks.jsonl``, one element of ``data`` a line,
which the cleveland adapter reads. See https://openaccess-api.clevelandart.org/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx

from curate.harvest import paging
from curate.harvest.client import PoliteClient, Transient, json_body
from curate.harvest.pull import Request, Step

OUTPUT = "artworks.jsonl"
PAGING = paging.Paging(position="skip", size="limit", by_page=False)


def steps(client: PoliteClient, request: Request, state: dict[str, Any] | None, out: Path) -> Iterator[Step]:
    query = {"q": request.query} if request.query is not None else {}
    return paging.steps(client, request, f"{request.base_url}/artworks/", {**request.settings.params, **query},
                        _listing, PAGING, state)


def _listing(response: httpx.Response) -> paging.Listing:
    value = json_body(response)
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise Transient("malformed page: no data list")
    info = value.get("info")
    return paging.Listing(value["data"], paging.total(info.get("total")) if isinstance(info, dict) else None)
