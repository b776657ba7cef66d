"""The Metropolitan Museum of Art: the Collection API's object list, then each object.

``--query``: search text (``/search?q=...&hasImages=true``); none lists every object id
(``/objects``). The id list is kept as ``object-ids.json``; objects are asked for
``concurrency`` at a time and written to ``objects.jsonl`` in the list's order, which the met
adapter reads. An object the API does not serve (404) is a line in ``failures.jsonl``; a batch
of which every object failed otherwise (403, 5xx past the retries) stops the pull there.
The API asks for at most 80 requests a second (https://metmuseum.github.io/).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import httpx

from curate.harvest.client import PoliteClient, Transient, json_body
from curate.harvest.pull import Request, Step, fetch_objects

OUTPUT = "objects.jsonl"
IDS = "object-ids.json"


def steps(client: PoliteClient, request: Request, state: dict[str, Any] | None, out: Path) -> Iterator[Step]:
    if state is None:
        page = client.get(*_listing(request), parse=_object_list)
        ids, bad = page.value
        failures = [{"reason": "not an object id", "id": value, "url": page.url} for value in bad]
        state = {"index": 0}
        yield Step(state=state if ids else None, pages=[(page.url, page.body, ".json")], failures=failures,
                   files={IDS: json.dumps(ids).encode()})
    else:
        ids = json.loads((out / IDS).read_text(encoding="utf-8"))
    index = state["index"]
    while index < len(ids):
        batch = ids[index:index + request.settings.page_size]
        step = Step(state={"index": index + len(batch)} if index + len(batch) < len(ids) else None)
        fetch_objects(client, [(i, f"{request.base_url}/objects/{i}") for i in batch], _object, step)
        index += len(batch)
        yield step


def _listing(request: Request) -> tuple[str, dict[str, str]]:
    if request.query is None:
        return f"{request.base_url}/objects", dict(request.settings.params)
    return f"{request.base_url}/search", {"q": request.query, "hasImages": "true", **request.settings.params}


def _object_list(response: httpx.Response) -> tuple[list[int], list[Any]]:
    """The ids of ``{"total": N, "objectIDs": [...]}`` (null when a search finds nothing), and what is not an id."""
    value = json_body(response)
    if not isinstance(value, dict) or "objectIDs" not in value:
        raise Transient("malformed page: no objectIDs in the object list")
    listed = value["objectIDs"] or []
    if not isinstance(listed, list):
        raise Transient(f"malformed page: objectIDs is a {type(listed).__name__}, not a list")
    return list(dict.fromkeys(v for v in listed if _is_id(v))), [v for v in listed if not _is_id(v)]


def _is_id(value: Any) -> bool:
    """Ids go into request paths: only positive integers do (a bool is an int to Python, not to the Met)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _object(response: httpx.Response) -> Any:
    value = json_body(response)
    if not isinstance(value, dict):
        raise Transient(f"malformed page: a JSON {type(value).__name__}, not an object record")
    return value
