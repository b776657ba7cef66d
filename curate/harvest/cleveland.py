"""Cleveland Museum of Art: the Open Access API's artworks, paged with ``skip`` and ``limit``.

``--query``: search text (``q``); none takes every artwork the manifest's ``params`` admit (by
default CC0 artworks with an image). Writes ``artworks.jsonl``, one element of ``data`` a line,
which the cleveland adapter reads. See https://openaccess-api.clevelandart.org/.

``--from-dump data.json|URL``: the museum's published dump (github.com/ClevelandMuseumArt/openaccess,
``data/data.json``: one JSON array of every artwork, CC0 or not, in the API's record shape) is
streamed into the same ``artworks.jsonl``, each record whole (``share_license_status`` with it:
the adapter decides). The cursor holds how many of the array's records are written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx

from curate.harvest import dumps, paging
from curate.harvest.client import PoliteClient, Transient, json_body
from curate.harvest.pull import DUMP_FOLDER, Request, Step

OUTPUT = "artworks.jsonl"
DUMP = "data.json"
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


def dump_steps(client: PoliteClient, request: Request, state: dict[str, Any] | None, out: Path) -> Iterator[Step]:
    path = dumps.obtain(client, request.dump, out / DUMP_FOLDER, DUMP)
    size = dumps.size_of(path, state)
    step = Step(state=None)
    for index, record in dumps.json_array(path, (state or {}).get("records", 0)):
        if isinstance(record, dict):
            step.records.append(record)
        else:
            step.failures.append({"reason": "malformed_record", "file": path.name, "index": index,
                                  "detail": f"element {index} of the array is a JSON {type(record).__name__}, "
                                            f"not an artwork object"})
        if len(step.records) + len(step.failures) == request.settings.page_size:
            step.state = {"records": index + 1, "size": size}
            yield step
            step = Step(state=None)
    yield step
