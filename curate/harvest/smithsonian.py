"""Smithsonian Open Access: the API's ``search`` rows (an api.data.gov key is needed).

``--query``: an EDAN query (``q``); none asks for every record with CC0 images
(``online_media_type:Images AND media_usage:CC0``). Paged with ``start`` and ``rows``. Writes
``records.jsonl``, one row a line, which the smithsonian adapter reads (the bulk files per unit
on https://github.com/Smithsonian/OpenAccess are the same rows and need no harvest). The key is
read from the environment variable the manifest names and never written: failures and the raw
page index show it masked. See https://edan.si.edu/openaccess/apidocs/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx

from curate.harvest import paging
from curate.harvest.client import PoliteClient, Transient, json_body
from curate.harvest.pull import Request, Step

OUTPUT = "records.jsonl"
DEFAULT_QUERY = "online_media_type:Images AND media_usage:CC0"
PAGING = paging.Paging(position="start", size="rows", by_page=False)
KEY = "api_key"
NEEDS_KEY = True


def steps(client: PoliteClient, request: Request, state: dict[str, Any] | None, out: Path) -> Iterator[Step]:
    params = {**request.settings.params, "q": request.query or DEFAULT_QUERY, KEY: request.api_key}
    return paging.steps(client, request, f"{request.base_url}/search", params, _listing, PAGING, state,
                        secret=(KEY,))


def _listing(response: httpx.Response) -> paging.Listing:
    value = json_body(response)
    found = value.get("response") if isinstance(value, dict) else None
    if not isinstance(found, dict) or not isinstance(found.get("rows", []), list):
        raise Transient("malformed page: no response.rows list")
    return paging.Listing(found.get("rows", []), paging.total(found.get("rowCount")))
