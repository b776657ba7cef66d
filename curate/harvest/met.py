"""The Metropolitan Museum of Art: the Collection API's object list, then each object.

``--query``: search text (``/search?q=...&hasImages=true``); none lists every object id
(``/objects``). The id list is kept as ``object-ids.json``; objects are asked for
``concurrency`` at a time and written to ``objects.jsonl`` in the list's order, which the met
adapter reads. An object the API does not serve (404) is a line in ``failures.jsonl``; a batch
of which every object failed otherwise (403, 5xx past the retries) stops the pull there.
The API asks for at most 80 requests a second (https://metmuseum.github.io/).

``--from-dump MetObjects.csv|URL``: the ids come from the museum's open-access CSV
(github.com/metmuseum/openaccess) instead of the object list: only rows whose ``Is Public
Domain`` is ``True`` are asked for, a batch at a time as the CSV is read (it is never held
whole); the cursor holds the byte offset in the CSV after the last row of the last batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import httpx

from curate.harvest import dumps
from curate.harvest.client import PoliteClient, Transient, json_body
from curate.harvest.pull import DUMP_FOLDER, Request, Step, fetch_objects

OUTPUT = "objects.jsonl"
IDS = "object-ids.json"
DUMP = "MetObjects.csv"
DUMP_ASKS_API = True
ID, PUBLIC_DOMAIN = "Object ID", "Is Public Domain"
FLAGS = {"True": True, "False": False}


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


def dump_steps(client: PoliteClient, request: Request, state: dict[str, Any] | None, out: Path) -> Iterator[Step]:
    path = dumps.obtain(client, request.dump, out / DUMP_FOLDER, DUMP)
    size = dumps.size_of(path, state)
    rows = dumps.csv_rows(path, (state or {}).get("offset", 0), (ID, PUBLIC_DOMAIN), "the Met's open-access CSV")
    counts = {key: (state or {}).get(key, 0) for key in ("rows", "public_domain")}
    while True:
        batch, step = [], Step(state=None)
        for row, start, offset in rows:
            counts["rows"] += 1
            object_id, public_domain = _csv_id(row, start, path, step)
            if public_domain and object_id is not None:
                counts["public_domain"] += 1
                batch.append(object_id)
                if len(batch) == request.settings.page_size:
                    step.state = {"offset": offset, "size": size, **counts}
                    break
        fetch_objects(client, [(i, f"{request.base_url}/objects/{i}") for i in batch], _object, step)
        yield step
        if step.state is None:
            return


def _csv_id(row: dict[str, str], start: int, path: Path, step: Step) -> tuple[int | None, bool]:
    """A row's object id and whether it is public domain; a row whose flag does not read, or a public one whose
    id does not, is a failure in ``step`` (a row that is not public domain is never asked for: its id is moot)."""
    value, flag = row.get(ID, "").strip(), FLAGS.get(row.get(PUBLIC_DOMAIN, "").strip())
    object_id = int(value) if value.isascii() and value.isdigit() and int(value) > 0 else None
    if flag is None or (flag and object_id is None):
        step.failures.append({"reason": "malformed_row", "file": path.name, "byte": start,
                              "detail": f"{ID}={row.get(ID)!r}, {PUBLIC_DOMAIN}={row.get(PUBLIC_DOMAIN)!r}: expected "
                                        f"a positive integer and True or False"})
    return object_id, bool(flag)


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
