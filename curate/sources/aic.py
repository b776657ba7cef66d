"""Art Institute of Chicago: artwork records from the public API or its data dump.

``path`` is one JSON file (a bare artwork, an API response ``{"data": {...}}`` or
``{"data": [...]}``), a JSON-lines file of artworks, or a folder of ``*.json`` artwork files
(the dump's ``artworks/{id}.json``; a dump root holding ``artworks/`` is read too).
Image URLs are IIIF Image API 2: ``{iiif_url}/{image_id}/full/{size}/0/default.jpg``.

One row per artwork image: ``image_id`` keyed by the artwork id, and with ``alt_images``
each of ``alt_image_ids`` as ``<id>/<alt image id>``.

Options:
    iiif_url: IIIF base URL; default: the API response's own ``config.iiif_url``, else
        ``config.json`` beside the artworks folder or one level above it (the dump layout).
    size: IIIF size parameter (default ``843,``: 843 px wide, the size AIC's own examples use).
    alt_images: also yield ``alt_image_ids`` (default false).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any, Iterator

from curate import records, verdict
from curate.sources._fields import flag, guarded, ident, kind, malformed, raw, require_path
from curate.sources import AdapterOptions, json_documents, parse_options, text

PAGE_URL = "https://www.artic.edu/artworks/{id}"
CONFIG = "config.json"
# ``is_public_domain: true``: AIC releases images of public-domain works under CC0 (its
# open access terms); ``false`` works are in copyright, with ``copyright_notice`` when known.
LICENSES = {True: "CC0-1.0", False: "all-rights-reserved"}


class Options(AdapterOptions):
    iiif_url: str | None = None
    size: str = "843,"
    alt_images: bool = False


def read(path: Path, source: str, options: dict | Options) -> Iterator[dict]:
    settings = parse_options(Options, options, source)
    path = require_path(path, source, folder_ok=True)
    option_iiif = text(settings.iiif_url)
    dump_iiif = None if option_iiif else config_iiif_url(path)
    return _read(path, source, option_iiif, dump_iiif, settings.size, settings.alt_images)


def _read(path: Path, source: str, option_iiif: str | None, dump_iiif: str | None, size: str,
          alt_images: bool) -> Iterator[dict]:
    for file in artwork_files(path):
        for origin, value, error in json_documents(file):
            if error:
                yield malformed(source, origin, error, value)
                continue
            for item_origin, item, response_iiif in _artworks(origin, value):
                rows_for = partial(_rows, source=source, iiif_url=option_iiif or response_iiif or dump_iiif,
                                   size=size, alt_images=alt_images)
                yield from guarded(source, item_origin, item, rows_for)


def artwork_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    folder = path / "artworks" if (path / "artworks").is_dir() else path
    return sorted(f for f in folder.glob("*.json") if f.name != CONFIG)


def config_iiif_url(path: Path) -> str | None:
    """``iiif_url`` from the dump's ``config.json``, looked up beside the artworks and one level up.

    A config.json that is there but unusable is a setup error, raised rather than turned
    into a missing_url row per artwork.
    """
    folder = path if path.is_dir() else path.parent
    for config_path in (folder / CONFIG, folder.parent / CONFIG):
        if not config_path.is_file():
            continue
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"aic: {config_path} is not valid JSON: {e}") from None
        iiif_url = text(config.get("iiif_url")) if isinstance(config, dict) else None
        if iiif_url is None:
            raise ValueError(f"aic: {config_path} has no iiif_url string")
        return iiif_url
    return None


def _artworks(origin: str, value: Any) -> Iterator[tuple[str, Any, str | None]]:
    """``(origin, artwork, iiif_url of the response)`` for a bare artwork, a list, or an API response."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield f"{origin}#{i}", item, None
        return
    if not (isinstance(value, dict) and "data" in value and "id" not in value):
        yield origin, value, None
        return
    config = value.get("config")
    iiif_url = text(config.get("iiif_url")) if isinstance(config, dict) else None
    data = value["data"]
    if isinstance(data, list):
        for i, item in enumerate(data):
            yield f"{origin}#{i}", item, iiif_url
    else:
        yield origin, data, iiif_url


def _rows(record: dict, origin: str, *, source: str, iiif_url: str | None, size: str,
          alt_images: bool) -> list[dict]:
    artwork_id = ident(record.get("id"))
    if artwork_id is None:
        return [records.rejected(source, None, "missing_id", f"{origin}: no usable id (id={record.get('id')!r})",
                                 origin=origin, raw=raw(record))]
    image_id = record.get("image_id")
    if image_id is not None and not isinstance(image_id, str):
        return [malformed(source, origin, f"image_id is {kind(image_id)}, expected a string",
                          record, artwork_id)]
    image_id = text(image_id)
    if image_id is None:
        return [records.rejected(source, artwork_id, "no_image", f"{origin}: image_id is null",
                                 **_described(record, artwork_id, origin))]
    images = [(artwork_id, image_id)]
    if alt_images:
        images += [(f"{artwork_id}/{alt}", alt) for alt in _alt_image_ids(record.get("alt_image_ids"))]
    described = _described(record, artwork_id, origin)
    if not iiif_url:
        detail = f"{origin}: no IIIF base URL (set option iiif_url or put {CONFIG} beside the artworks folder)"
        return [records.rejected(source, source_id, "missing_url", detail, **described) for source_id, _ in images]
    notice = text(record.get("copyright_notice"))
    # The thumbnail's width and height are the primary image's full size; the alternates' are not stated.
    primary = {**described, "meta": {**described["meta"], **_stated_size(record.get("thumbnail"))}}
    return [records.candidate(source, source_id, url=image_url(iiif_url, image, size), detail=notice,
                              **(primary if image == image_id else described))
            for source_id, image in images]


def _stated_size(thumbnail: Any) -> dict[str, int]:
    if not isinstance(thumbnail, dict):
        return {}
    width, height = thumbnail.get("width"), thumbnail.get("height")
    if isinstance(width, int) and isinstance(height, int):
        return {"source_width": width, "source_height": height}
    return {}


def image_url(iiif_url: str, image_id: str, size: str) -> str:
    return f"{iiif_url.rstrip('/')}/{image_id}/full/{size}/0/default.jpg"


def _alt_image_ids(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return list(dict.fromkeys(v.strip() for v in value if isinstance(v, str) and v.strip()))


def _described(record: dict, artwork_id: str, origin: str) -> dict[str, Any]:
    """Everything but the url: shared by candidates and rejections, so a reviewer sees what was dropped."""
    public_domain = record.get("is_public_domain")
    return dict(
        origin=origin,
        page_url=PAGE_URL.format(id=artwork_id),
        **verdict.primary([*verdict.mapped("is_public_domain", raw(public_domain), LICENSES.get(flag(public_domain))),
                           *verdict.pieces("copyright_notice", text(record.get("copyright_notice")), verdict.MENTION)]),
        creator=creator(record),
        title=text(record.get("title")),
        date=text(record.get("date_display")),
        meta=_meta(record),
    )


def creator(record: dict) -> str | None:
    """``artist_title``, else the name line of ``artist_display`` ("Name\\nNationality, dates")."""
    display = text(record.get("artist_display"))
    return text(record.get("artist_title")) or (display.splitlines()[0].strip() if display else None)


def _meta(record: dict) -> dict[str, str | None]:
    thumbnail = record.get("thumbnail")
    return {
        "medium": text(record.get("medium_display")),
        "classification": text(record.get("classification_title")),
        "artwork_type": text(record.get("artwork_type_title")),
        "place_of_origin": text(record.get("place_of_origin")),
        "department": text(record.get("department_title")),
        "style": text(record.get("style_title")),
        "dimensions": text(record.get("dimensions")),
        "inscriptions": text(record.get("inscriptions")),
        "artist_display": text(record.get("artist_display")),
        "credit_line": text(record.get("credit_line")),
        "main_reference_number": text(record.get("main_reference_number")),
        "alt_text": text(thumbnail.get("alt_text")) if isinstance(thumbnail, dict) else None,
        # AIC's data is CC0 except ``description``, which is CC BY 4.0 (the dump's info.json):
        # the key says so, so nobody puts it in a caption without attribution unknowingly.
        "description_cc_by": text(record.get("description")),
    }
