"""Art Institute of Chicago: the public API's artworks, with ``fields`` and the IIIF config.

``--query``: search text (``/artworks/search?q=...``; the API serves the first 10,000 hits of
a search); none pages through ``/artworks``. Writes ``artworks.jsonl`` (one artwork a line) and
``config.json`` (the response's ``config``, whose ``iiif_url`` the aic adapter builds image URLs
from). AIC asks anonymous clients for at most 60 requests a minute (https://api.artic.edu/docs/).

``--from-dump artic-api-data.tar.bz2|URL``: AIC's data dump, a tar archive (gz, bz2 or xz) holding
``json/artworks/<id>.json``, one artwork a file, and ``json/config.json``, is read as a stream,
a file at a time, into the same two files: each artwork with the fields the API path asks for,
and the dump's config. The cursor holds how many artwork files are written; a resumed pull reads
the archive again from its start (a compressed stream cannot seek) and skips those.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import httpx

from curate.harvest import dumps, paging
from curate.harvest.client import PoliteClient, Transient, json_body
from curate.harvest.pull import DUMP_FOLDER, Request, Step

OUTPUT = "artworks.jsonl"
CONFIG = "config.json"
# What the aic adapter reads, and the thumbnail (its width and height are the image's).
FIELDS = ("id", "title", "image_id", "alt_image_ids", "is_public_domain", "copyright_notice", "artist_display",
          "artist_title", "date_display", "medium_display", "classification_title", "artwork_type_title",
          "place_of_origin", "department_title", "style_title", "dimensions", "inscriptions", "credit_line",
          "main_reference_number", "thumbnail", "description", "api_link")
SEARCH_LIMIT = 10_000
DUMP = "artic-api-data.tar"  # the download's name; tarfile finds the compression from the content
LARGEST = 16 * 2**20  # an artwork file is kilobytes; a file over this is not one


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


def dump_steps(client: PoliteClient, request: Request, state: dict[str, Any] | None, out: Path) -> Iterator[Step]:
    path = dumps.obtain(client, request.dump, out / DUMP_FOLDER, DUMP)
    size = dumps.size_of(path, state)
    start = (state or {}).get("artworks", 0)
    step, seen = Step(state=None), 0
    for name, content in dumps.tar_files(path, _in_dump, LARGEST):
        if PurePosixPath(name).name == CONFIG:
            # A config before the resumed position was in a step already written: its failure too.
            _dump_config(name, content, step, again=seen < start)
            continue
        seen += 1
        if seen <= start:
            continue
        record, problem = _dump_artwork(content)
        if problem:
            step.failures.append({"reason": "malformed_record", "file": name, "detail": problem})
        else:
            step.records.append(record)
        if len(step.records) + len(step.failures) == request.settings.page_size:
            step.state = {"artworks": seen, "size": size}
            yield step
            step = Step(state=None)
    if CONFIG not in step.files and not (out / CONFIG).is_file():
        step.failures.append({"reason": "no_iiif_config", "file": str(path), "detail": (
            f"the dump has no json/{CONFIG}: the aic adapter builds image URLs from its iiif_url; set the "
            f"adapter's iiif_url option")})
    yield step


def _in_dump(name: str) -> bool:
    """The artwork files (``json/artworks/<id>.json``) and the config (``json/config.json``) of a dump."""
    parts = PurePosixPath(name).parts
    return parts[-1].endswith(".json") and (parts[-2:-1] == ("artworks",) or parts[-2:] == ("json", CONFIG))


def _dump_artwork(content: bytes | None) -> tuple[dict[str, Any], str | None]:
    """An artwork file's record with the API path's fields, or why it is not one."""
    if content is None:
        return {}, f"over {LARGEST} bytes: not an artwork file"
    try:
        value = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return {}, f"not JSON ({e})"
    if not isinstance(value, dict):
        return {}, f"a JSON {type(value).__name__}, not an artwork object"
    return {key: value[key] for key in FIELDS if key in value}, None


def _dump_config(name: str, content: bytes | None, step: Step, again: bool) -> None:
    try:
        config = json.loads(content or b"")
    except (UnicodeDecodeError, json.JSONDecodeError):
        config = None
    if isinstance(config, dict) and isinstance(config.get("iiif_url"), str) and config["iiif_url"].strip():
        step.files[CONFIG] = content
    elif not again:
        step.failures.append({"reason": "no_iiif_config", "file": name,
                              "detail": f"the dump's {CONFIG} has no iiif_url string; set the aic adapter's "
                                        f"iiif_url option"})
