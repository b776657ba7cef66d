"""Each source's API as the harvest tests serve it: the real records of tests/fixtures/sources, paged in
that API's own envelope and pagination (continue tokens, skip/limit, page numbers, an id list)."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from curate.sources import json_lines, load_adapter

from .conftest import FIXTURES, Reply, Seen, jsonl


@dataclass
class API:
    adapter: str
    fixture: Path  # the recorded file (or folder) the served records come from
    records: list[dict]
    route: Callable[[Seen], Reply]
    second_page: Callable[[Seen], bool]  # the request a fault is served to: past the first page
    page_size: int = 5
    settings: dict[str, Any] = field(default_factory=dict)  # harvest settings this API needs (its key)

    def expected(self) -> list[tuple]:
        """The adapter's rows of the records served (the fixture may hold more: a line that is not JSON)."""
        with tempfile.TemporaryDirectory() as folder:
            served = Path(folder) / "served.jsonl"
            served.write_text("".join(json.dumps(r) + "\n" for r in self.records), encoding="utf-8")
            if self.adapter == "aic":
                (Path(folder) / "config.json").write_bytes((self.fixture.parent / "config.json").read_bytes())
            return adapter_rows(self.adapter, served)


def adapter_rows(adapter: str, path: Path) -> list[tuple]:
    """What a pipeline takes from ``path``: each row's key, url, license, fate, title and creator (a row
    without a source id is keyed by its file and line, so its key is left out)."""
    return [(r["key"] if r["source_id"] is not None else None, r["url"], r["license"], r["status"], r["reason"],
             r["title"], r["creator"]) for r in load_adapter(adapter)(path, adapter, {})]


def commons() -> API:
    fixture = FIXTURES / "wikimedia-commons" / "pages.jsonl"
    pages = jsonl(fixture)

    def route(seen: Seen) -> Reply:
        start, size = int(seen.params.get("gaicontinue", "0")), int(seen.params["gailimit"])
        chunk = pages[start:start + size]
        body: dict[str, Any] = {"batchcomplete": "", "query": {"pages": {str(p["pageid"]): p for p in chunk}}}
        if start + size < len(pages):
            body["continue"] = {"gaicontinue": str(start + size), "continue": "gaicontinue||"}
        return Reply.json(body)

    return API("commons", fixture, pages, route, lambda s: s.params.get("gaicontinue") == "5")


def met() -> API:
    fixture = FIXTURES / "metropolitan-museum-of-art" / "objects.jsonl"
    objects = jsonl(fixture)
    by_id = {str(o["objectID"]): o for o in objects}

    def route(seen: Seen) -> Reply:
        if seen.path == "/public/collection/v1/objects":
            return Reply.json({"total": len(objects), "objectIDs": [o["objectID"] for o in objects]})
        object_id = seen.path.rsplit("/", 1)[1]
        if object_id in by_id:
            return Reply.json(by_id[object_id])
        return Reply.json({"message": "ObjectID not found"}, status=404)

    second = f"/public/collection/v1/objects/{objects[1]['objectID']}"
    return API("met", fixture, objects, route, lambda s: s.path == second)


def cleveland() -> API:
    fixture = FIXTURES / "cleveland-museum-of-art" / "artworks.jsonl"
    artworks = jsonl(fixture)

    def route(seen: Seen) -> Reply:
        skip, limit = int(seen.params["skip"]), int(seen.params["limit"])
        return Reply.json({"info": {"total": len(artworks), "parameters": seen.params},
                           "data": artworks[skip:skip + limit]})

    return API("cleveland", fixture, artworks, route, lambda s: s.params.get("skip") == "5")


def aic() -> API:
    fixture = FIXTURES / "art-institute-of-chicago" / "artworks"
    artworks = [json.loads(f.read_text(encoding="utf-8")) for f in sorted(fixture.glob("*.json"))]
    config = json.loads((fixture.parent / "config.json").read_text(encoding="utf-8"))

    def route(seen: Seen) -> Reply:
        page, limit = int(seen.params["page"]), int(seen.params["limit"])
        chunk = artworks[(page - 1) * limit:page * limit]
        return Reply.json({"pagination": {"total": len(artworks), "limit": limit, "offset": (page - 1) * limit,
                                          "total_pages": math.ceil(len(artworks) / limit), "current_page": page},
                           "data": chunk, "info": {"license_text": "CC0 except description"}, "config": config})

    return API("aic", fixture, artworks, route, lambda s: s.params.get("page") == "2", page_size=2)




KEY_ENV, KEY = "CLEANROOM_TEST_API_KEY", "test-key-0123"


def _keyed(route: Callable[[Seen], Reply]) -> Callable[[Seen], Reply]:
    """An API that answers only requests carrying the test key, as api.data.gov and Flickr do."""
    return lambda seen: route(seen) if seen.params.get("api_key") == KEY else Reply.json({"error": "key"}, status=403)


def smithsonian() -> API:
    fixture = FIXTURES / "smithsonian-open-access" / "records.jsonl"
    rows = jsonl(fixture)

    def route(seen: Seen) -> Reply:
        start, size = int(seen.params["start"]), int(seen.params["rows"])
        return Reply.json({"status": 200, "responseCode": 1, "response": {
            "rows": rows[start:start + size], "rowCount": len(rows), "message": "content found"}})

    return API("smithsonian", fixture, rows, _keyed(route), lambda s: s.params.get("start") == "5",
               settings={"api_key_env": KEY_ENV})


def finna() -> API:
    fixture = FIXTURES / "finna" / "records.jsonl"
    found = jsonl(fixture)

    def route(seen: Seen) -> Reply:
        page, limit = int(seen.params["page"]), int(seen.params["limit"])
        chunk = found[(page - 1) * limit:page * limit]
        return Reply.json({"resultCount": len(found), "status": "OK", **({"records": chunk} if chunk else {})})

    return API("finna", fixture, found, route, lambda s: s.params.get("page") == "2", page_size=3)


def flickr() -> API:
    fixture = FIXTURES / "flickr" / "photos.jsonl"
    lines = [value for _, value, error in json_lines(fixture) if not error]  # the fixture has a broken line
    photos = [photo for line in lines for photo in (line["photos"]["photo"] if "photos" in line else [line])]

    def route(seen: Seen) -> Reply:
        page, size = int(seen.params["page"]), int(seen.params["per_page"])
        return Reply.json({"photos": {"page": page, "pages": math.ceil(len(photos) / size), "perpage": size,
                                      "total": str(len(photos)), "photo": photos[(page - 1) * size:page * size]},
                           "stat": "ok"})

    return API("flickr", fixture, photos, _keyed(route), lambda s: s.params.get("page") == "2",
               settings={"api_key_env": KEY_ENV})


def walters() -> API:
    fixture = FIXTURES / "walters" / "objects.jsonl"
    objects = [value for _, value, error in json_lines(fixture) if not error]  # the fixture has a broken line

    def route(seen: Seen) -> Reply:
        if seen.params.get("apikey") != KEY:
            return Reply.json({"ReturnStatus": False, "ReturnCode": 401, "ReturnMessage": ["apikey"]}, status=401)
        page, size = int(seen.params["Page"]), int(seen.params["pageSize"])
        return Reply.json({"Items": objects[(page - 1) * size:page * size], "ReturnStatus": True, "ReturnCode": 200})

    return API("walters", fixture, objects, route, lambda s: s.params.get("Page") == "2",
               settings={"api_key_env": KEY_ENV})


GETTY = "https://data.getty.edu/museum/collection"


def getty_stream(objects: list[dict], per_page: int = 3) -> list[dict]:
    """The activity stream over ``objects`` as Getty publishes it: a Create per object, and among them an
    Update of an object created earlier, a Delete and a Person, which the harvest asks for nothing."""
    activities = [{"type": "Create", "object": {"id": o["id"], "type": "HumanMadeObject"}} for o in objects]
    activities.insert(2, {"type": "Create", "object": {"id": f"{GETTY}/person/1a2b", "type": "Person"}})
    activities.insert(4, {"type": "Delete", "object": {"id": f"{GETTY}/object/gone-0001", "type": "HumanMadeObject"}})
    activities.append({"type": "Update", "object": {"id": objects[0]["id"], "type": "HumanMadeObject"}})
    pages = []
    for number, start in enumerate(range(0, len(activities), per_page), start=1):
        page: dict[str, Any] = {"id": f"{GETTY}/activity-stream/page/{number}", "type": "OrderedCollectionPage",
                                "partOf": {"id": f"{GETTY}/activity-stream", "type": "OrderedCollection"},
                                "startIndex": start, "orderedItems": [
                                    {"id": f"{GETTY}/activity/{start + i:08d}", **a}
                                    for i, a in enumerate(activities[start:start + per_page])]}
        if start + per_page < len(activities):
            page["next"] = {"id": f"{GETTY}/activity-stream/page/{number + 1}", "type": "OrderedCollectionPage"}
        pages.append(page)
    return pages


def getty() -> API:
    fixture = FIXTURES / "getty" / "objects.jsonl"
    objects = [value for _, value, error in json_lines(fixture) if not error]  # the fixture has a broken line
    by_path = {o["id"][len("https://data.getty.edu"):]: o for o in objects}
    pages = getty_stream(objects)

    def route(seen: Seen) -> Reply:
        if seen.path == "/museum/collection/activity-stream":
            return Reply.json({"@context": "https://www.w3.org/ns/activitystreams", "id": f"{GETTY}/activity-stream",
                               "type": "OrderedCollection", "totalItems": sum(len(p["orderedItems"]) for p in pages),
                               "first": {"id": pages[0]["id"], "type": "OrderedCollectionPage"},
                               "last": {"id": pages[-1]["id"], "type": "OrderedCollectionPage"}})
        if seen.path.startswith("/museum/collection/activity-stream/page/"):
            return Reply.json(pages[int(seen.path.rsplit("/", 1)[1]) - 1])
        if seen.path in by_path:
            return Reply.json(by_path[seen.path])
        return Reply.json({"error": "not found"}, status=404)

    return API("getty", fixture, objects, route, lambda s: s.path.endswith("/activity-stream/page/2"))


BASE_PATHS = {"commons": "/w/api.php", "met": "/public/collection/v1", "cleveland": "/api", "aic": "/api/v1",
              "smithsonian": "/openaccess/api/v1.0", "finna": "/api/v1", "flickr": "/services/rest",
              "walters": "/v1", "getty": "/museum/collection"}
APIS = {"commons": commons, "met": met, "cleveland": cleveland, "aic": aic, "smithsonian": smithsonian,
        "finna": finna, "flickr": flickr, "walters": walters, "getty": getty}
