"""Cleveland Museum of Art: Open Access API artwork records, one JSON object per line.

One row per artwork (its ``images`` renditions are sizes of one photograph).

Options:
    rendition: which of ``images.{web,print,full}`` to fetch (default ``web``); when the
        record lacks it, ``print`` and then ``web`` are tried. ``full`` is an uncompressed
        TIFF of tens of MB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Literal

from curate import records, verdict
from curate.sources import AdapterOptions, parse_options, text
from curate.sources._fields import ident, joined, json_records, kind, malformed, raw

FALLBACK = ("print", "web")
# ``share_license_status`` is a fixed code: the CMA releases "CC0" images under CC0 1.0
# and marks everything else "Copyrighted" (its report counts an unused "other" bucket,
# which stays unrecognised so the policy rejects it as license_unknown).
LICENSES = {"CC0": "CC0-1.0", "Copyrighted": "all-rights-reserved"}


class Options(AdapterOptions):
    rendition: Literal["web", "print", "full"] = "web"


def read(path: Path, source: str, options: dict | Options) -> Iterator[dict]:
    order = tuple(dict.fromkeys((parse_options(Options, options, source).rendition, *FALLBACK)))
    return json_records(path, source, lambda record, origin: _rows(record, origin, source, order))


def _rows(record: dict, origin: str, source: str, order: tuple[str, ...]) -> list[dict]:
    source_id = ident(record.get("id"))
    if source_id is None:
        return [records.rejected(source, None, "missing_id", f"{origin}: no usable id (id={record.get('id')!r})",
                                 origin=origin, raw=raw(record))]
    images = record.get("images")
    if images in (None, {}, []):
        return [records.rejected(source, source_id, "no_image", f"{origin}: images is empty (no photography)",
                                 **_described(record, origin))]
    if not isinstance(images, dict):
        return [malformed(source, origin, f"images is {kind(images)}, expected an object of renditions",
                          record, source_id)]
    url = image_url(images, order)
    if url is None:
        return [records.rejected(source, source_id, "missing_url",
                                 f"{origin}: no url in images.{{{','.join(order)}}}", **_described(record, origin))]
    described = _described(record, origin)
    described["meta"].update(_stated_size(images, order))  # the fetched rendition's size, as the API states it
    # The free-text copyright line is the notice a reviewer of a "Copyrighted" record wants.
    return [records.candidate(source, source_id, url=url, detail=text(record.get("copyright")), **described)]


def _rendition(images: dict, order: tuple[str, ...]) -> dict | None:
    """The first rendition of ``order`` the record has a url for."""
    for rendition in order:
        entry = images.get(rendition)
        if isinstance(entry, dict) and text(entry.get("url")):
            return entry
    return None


def image_url(images: dict, order: tuple[str, ...]) -> str | None:
    entry = _rendition(images, order)
    return None if entry is None else text(entry.get("url"))


def _stated_size(images: dict, order: tuple[str, ...]) -> dict[str, int]:
    """``source_width``/``source_height`` from the rendition's ``width``/``height`` (the API sends "1263")."""
    entry = _rendition(images, order) or {}
    try:
        return {"source_width": int(entry["width"]), "source_height": int(entry["height"])}
    except (KeyError, TypeError, ValueError):
        return {}


def _described(record: dict, origin: str) -> dict[str, Any]:
    """Everything but the url: shared by candidates and rejections, so a reviewer sees what was dropped."""
    status = record.get("share_license_status")
    return dict(
        origin=origin,
        page_url=text(record.get("url")),
        **verdict.primary([*verdict.mapped("share_license_status", raw(status),
                                           LICENSES.get(status) if isinstance(status, str) else None),
                           *verdict.pieces("copyright", text(record.get("copyright")), verdict.MENTION)]),
        creator=creator(record.get("creators")),
        title=text(record.get("title")),
        date=text(record.get("creation_date")),
        meta=_meta(record),
    )


def creator(creators: Any) -> str | None:
    """``creators[].description`` ("Thomas Cole (American, 1801-1848)"), joined when there are several."""
    if not isinstance(creators, list):
        return None
    return joined([c.get("description") for c in creators if isinstance(c, dict)])


def _meta(record: dict) -> dict[str, str | None]:
    # Descriptions may carry HTML; it stays, the captioner strips it.
    return {
        "type": text(record.get("type")),
        "technique": text(record.get("technique")),
        "culture": joined(record.get("culture")),
        "department": text(record.get("department")),
        "collection": text(record.get("collection")),
        "description": text(record.get("description")),
        "wall_description": text(record.get("wall_description")),
        "digital_description": text(record.get("digital_description")),
        "measurements": text(record.get("measurements")),
        "title_in_original_language": text(record.get("title_in_original_language")),
        "series": text(record.get("series")),
        "creditline": text(record.get("creditline")),
        "accession_number": text(record.get("accession_number")),
    }
