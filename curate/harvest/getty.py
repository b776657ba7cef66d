"""J. Paul Getty Museum: the Linked Art activity stream, then each object it names.

The collection's ActivityStreams ``OrderedCollection`` (``{base}/activity-stream``) points at its
``first`` page; each ``OrderedCollectionPage`` lists Create/Update/Delete activities and its
``next`` page. Each ``HumanMadeObject`` a page names is asked for (``{base}/object/<uuid>``)
``concurrency`` at a time, at its first appearance in the stream only: an object is asked for
when the harvest reaches it, so what is written is its current version, and a later Update of it
adds nothing. Delete activities and other entity types (people, places) are skipped; an object
deleted since its Create answers 404 or 410, a line in ``failures.jsonl``, and the harvest goes on.
Getty offers no list-all endpoint and no dump: the stream is the way to enumerate the collection.
No ``--query``. Writes ``objects.jsonl``, one object a line, which the getty adapter reads.

The stream's links name data.getty.edu; with ``--base-url`` they are followed on that server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import httpx

from curate.harvest.client import PoliteClient, Transient, json_body
from curate.harvest.pull import RAW_INDEX, Request, Step, fetch_objects

OUTPUT = "objects.jsonl"
ROOT = "https://data.getty.edu/museum/collection"  # where the stream's own links point
STREAM = "activity-stream"
OBJECT_TYPE = "HumanMadeObject"


def steps(client: PoliteClient, request: Request, state: dict[str, Any] | None, out: Path) -> Iterator[Step]:
    if request.query is not None:
        raise ValueError("getty: the activity stream is the whole collection; a pull takes no --query")
    if state is None:
        collection = client.get(f"{request.base_url}/{STREAM}", parse=_collection)
        state = {"page": _rebased(collection.value, request)}
        yield Step(state=state, pages=[(collection.url, collection.body, ".json")])
    page_url = state["page"]
    seen = _seen_before(out, page_url)
    while page_url is not None:
        page = client.get(page_url, parse=_activity_page)
        activities, following = page.value
        fresh = [uri for uri in _objects(activities) if uri not in seen]
        seen.update(fresh)
        page_url = _rebased(following, request) if following else None
        step = Step(state={"page": page_url} if page_url else None, pages=[(page.url, page.body, ".json")])
        fetch_objects(client, [(uri, _rebased(uri, request)) for uri in fresh], _linked_art, step)
        yield step


def _linked_art(response: httpx.Response) -> dict[str, Any]:
    """An object record as served; whether it is a usable HumanMadeObject is the adapter's to say."""
    value = json_body(response)
    if not isinstance(value, dict):
        raise Transient(f"malformed page: a JSON {type(value).__name__}, not a Linked Art object")
    return value


def _rebased(url: str, request: Request) -> str:
    """A link of the stream, on the server the harvest asks (a mirror or test server with --base-url)."""
    return request.base_url + url[len(ROOT):] if url.startswith(ROOT + "/") else url


def _link(value: Any) -> str | None:
    """An ActivityStreams link: a URL, or an object with its ``id``."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value.strip() else None


def _collection(response: httpx.Response) -> str:
    value = json_body(response)
    first = _link(value.get("first")) if isinstance(value, dict) else None
    if first is None:
        raise Transient("malformed page: the activity stream has no first page")
    return first


def _activity_page(response: httpx.Response) -> tuple[list[Any], str | None]:
    value = json_body(response)
    if not isinstance(value, dict) or not isinstance(value.get("orderedItems"), list):
        raise Transient("malformed page: no orderedItems list")
    return value["orderedItems"], _link(value.get("next"))


def _objects(activities: list[Any]) -> list[str]:
    """The objects a page creates or updates, each once, in stream order."""
    found = []
    for activity in activities:
        target = activity.get("object") if isinstance(activity, dict) else None
        if isinstance(target, dict) and target.get("type") == OBJECT_TYPE and activity.get("type") != "Delete":
            uri = _link(target)
            if uri and uri.startswith(f"{ROOT}/object/"):
                found.append(uri)
    return list(dict.fromkeys(found))


def _seen_before(out: Path, page_url: str) -> set[str]:
    """The objects named by the stream pages harvested before ``page_url``: a resumed pull asks for
    none of them again. Read from the raw pages, which are kept whole for every finished step."""
    index = out / RAW_INDEX
    if not index.is_file():
        return set()
    seen: set[str] = set()
    for line in index.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        # The page a --limit cut short is left out: its objects are taken again, past what was taken.
        # Object pages are not read: only stream pages name objects.
        if entry["url"] == page_url or f"/{STREAM}/" not in entry["url"]:
            continue
        value = json.loads((out / entry["file"]).read_bytes())
        if isinstance(value, dict) and value.get("type") == "OrderedCollectionPage":
            seen.update(_objects(value.get("orderedItems") or []))
    return seen
