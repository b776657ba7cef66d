"""Smithsonian Open Access: EDAN content rows (API search rows or bulk metadata lines), JSON lines.

One row per ``content.descriptiveNonRepeating.online_media.media[]`` item, keyed
``<row id>/<idsId>`` (``<row id>/<index>`` for media without an IDS id). Each item carries
its own license (``usage.access``); the row-level ``metadata_usage`` is about the metadata
only. Rows without media are metadata-only records (``no_image``); media that are not
still images (scanned books, 3D models) are ``not_image``.

Options:
    rendition: ``screen`` (default: the labelled "Screen Image" resource), ``high-resolution``
        (the "High-resolution JPEG" resource) or ``content`` (the IDS delivery URL); when the
        labelled resource is missing, ``content`` is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from curate import records, verdict
from curate.sources import AdapterOptions, parse_options, text
from curate.sources._fields import ident, joined, json_records, kind, malformed, raw

MEDIA = "content.descriptiveNonRepeating.online_media.media"
# Resource labels by rendition; "High-resolution" alone would also match the TIFF.
RENDITIONS = {"screen": "screen image", "high-resolution": "high-resolution jpeg", "content": None}
IMAGE_TYPE = "Images"
# ``freetext.name`` mixes makers with donors, owners, subjects, regions and elevations; only
# these roles (a word of the display label, any case) make a name the work's creator.
CREATOR_ROLES = frozenset({"artist", "author", "creator", "maker", "photographer", "designer", "manufacturer",
                           "architect", "engraver", "illustrator", "painter", "sculptor", "printer", "printmaker",
                           "lithographer", "draftsman", "draughtsman", "etcher", "carver", "weaver", "potter",
                           "silversmith", "goldsmith", "calligrapher", "cartographer", "inventor", "builder"})
# A natural-history specimen has no maker; its collector is the nearest thing to one.
COLLECTOR_ROLES = frozenset({"collector"})
DESCRIPTION_LABELS = frozenset({"description", "summary", "abstract", "brief description"})


class Options(AdapterOptions):
    rendition: Literal["screen", "high-resolution", "content"] = "screen"  # the keys of RENDITIONS


def read(path: Path, source: str, options: dict | Options) -> Iterator[dict]:
    rendition = parse_options(Options, options, source).rendition
    return json_records(path, source, lambda row, origin: _rows(row, origin, source, rendition))


def _rows(row: dict, origin: str, source: str, rendition: str) -> list[dict]:
    row_id = ident(row.get("id"))
    if row_id is None:
        return [records.rejected(source, None, "missing_id", f"{origin}: no usable id (id={row.get('id')!r})",
                                 origin=origin, raw=raw(row))]
    content = row.get("content")
    dnr = content.get("descriptiveNonRepeating") if isinstance(content, dict) else None
    if not isinstance(dnr, dict):
        return [malformed(source, origin, "content.descriptiveNonRepeating is not an object", row, row_id)]
    online_media = dnr.get("online_media")
    if online_media is not None and not isinstance(online_media, dict):
        return [malformed(source, origin, f"online_media is {kind(online_media)}, expected an object",
                          row, row_id)]
    media = online_media.get("media") if online_media else None
    if media in (None, []):
        return [records.rejected(source, row_id, "no_image", f"{origin}: no online_media (metadata-only record)",
                                 **_described(row, content, dnr, origin))]
    if not isinstance(media, list):
        return [malformed(source, origin, f"online_media.media is {kind(media)}, expected a list",
                          row, row_id)]
    described = _described(row, content, dnr, origin)
    rights = _object_rights(content)
    rows, seen = [], set()
    for i, item in enumerate(media):
        source_id = _media_id(row_id, item, i, seen)
        rows.append(_media_row(source, source_id, item, i, origin, rendition, described, rights))
    return rows


def _media_id(row_id: str, item: Any, index: int, seen: set[str]) -> str:
    """``<row id>/<idsId>``, stable when media are reordered; the index when there is no (unique) idsId."""
    ids_id = text(item.get("idsId")) if isinstance(item, dict) else None
    if ids_id and ids_id not in seen:
        seen.add(ids_id)
        return f"{row_id}/{ids_id}"
    return f"{row_id}/{index}"


def _media_row(source: str, source_id: str, item: Any, i: int, origin: str, rendition: str,
               described: dict[str, Any], rights: list[verdict.Piece]) -> dict:
    if not isinstance(item, dict):
        return malformed(source, origin, f"online_media.media[{i}] is {kind(item)}, expected an object",
                         item, source_id)
    fields = {**described, **_license(item, i, rights)}
    media_type = item.get("type")
    if media_type != IMAGE_TYPE:
        return records.rejected(source, source_id, "not_image",
                                f"{origin}: online_media.media[{i}].type is {media_type!r}, not {IMAGE_TYPE!r}",
                                **fields)
    url = image_url(item, rendition)
    if url is None:
        return records.rejected(source, source_id, "missing_url",
                                f"{origin}: online_media.media[{i}] has no resources or content URL", **fields)
    return records.candidate(source, source_id, url=url, **fields)


def image_url(item: dict, rendition: str) -> str | None:
    label = RENDITIONS[rendition]
    resources = item.get("resources")
    if label and isinstance(resources, list):
        for resource in resources:
            if isinstance(resource, dict) and str(resource.get("label", "")).lower().startswith(label):
                url = text(resource.get("url"))
                if url:
                    return url
    return text(item.get("content"))


def _license(item: dict, i: int, rights: list[verdict.Piece]) -> dict[str, Any]:
    """The media item's own usage statement first, then the object's rights lines."""
    usage = item.get("usage") if isinstance(item.get("usage"), dict) else {}
    found = [*verdict.pieces(f"{MEDIA}[{i}].usage.access", raw(usage.get("access"))),
             *verdict.pieces(f"{MEDIA}[{i}].usage.text", raw(usage.get("text"))), *rights]
    return verdict.primary(found)


def _object_rights(content: dict) -> list[verdict.Piece]:
    """``freetext.objectRights`` lines: mostly about visiting the archive, so they count only when
    they name a license (a "non-commercial use only" line there still refuses the image)."""
    freetext = content.get("freetext") if isinstance(content.get("freetext"), dict) else {}
    lines = freetext.get("objectRights") if isinstance(freetext.get("objectRights"), list) else []
    return [piece for j, line in enumerate(lines) if isinstance(line, dict)
            for piece in verdict.pieces(f"content.freetext.objectRights[{j}].content", text(line.get("content")),
                                        verdict.MENTION)]


def _described(row: dict, content: dict, dnr: dict, origin: str) -> dict[str, Any]:
    """Everything but the url and license: shared by all media of a row and by its rejections."""
    freetext = content.get("freetext") if isinstance(content.get("freetext"), dict) else {}
    indexed = content.get("indexedStructured") if isinstance(content.get("indexedStructured"), dict) else {}
    title = dnr.get("title")
    return dict(
        origin=origin,
        page_url=text(dnr.get("record_link")),
        creator=creator(freetext),
        title=text(row.get("title")) or (text(title.get("content")) if isinstance(title, dict) else None),
        date=next(iter(entries(freetext, "date")), None),
        meta=_meta(row, dnr, freetext, indexed),
    )


def entries(freetext: dict, key: str, keep: Callable[[str], bool] | None = None) -> list[str]:
    """Contents of ``freetext[key]`` (``[{label, content}, ...]``), optionally only labels ``keep`` accepts."""
    values = freetext.get(key)
    if not isinstance(values, list):
        return []
    found = (v for v in values if isinstance(v, dict) and (keep is None or keep(str(v.get("label", "")))))
    return [c for c in (text(v.get("content")) for v in found) if c]


def labelled(freetext: dict, key: str) -> str | None:
    """``freetext[key]`` as "Label: content; ..." (labels vary by unit and carry the meaning)."""
    values = freetext.get(key)
    if not isinstance(values, list):
        return None
    pairs = ((text(v.get("label")), text(v.get("content"))) for v in values if isinstance(v, dict))
    return joined([f"{label}: {value}" if label else value for label, value in pairs if value])


def creator(freetext: dict) -> str | None:
    """Names labelled with a maker role, else with a collector role; never donors or owners."""
    for roles in (CREATOR_ROLES, COLLECTOR_ROLES):
        names = entries(freetext, "name", lambda label: bool(roles & set(label.lower().replace("/", " ").split())))
        if names:
            return joined(names)
    return None


def _meta(row: dict, dnr: dict, freetext: dict, indexed: dict) -> dict[str, str | None]:
    return {
        "unit": text(row.get("unitCode")) or text(dnr.get("unit_code")),
        "data_source": text(dnr.get("data_source")),
        "object_type": joined(indexed.get("object_type")) or joined(entries(freetext, "objectType")),
        "physical_description": labelled(freetext, "physicalDescription"),
        "description": joined(entries(freetext, "notes", lambda label: label.lower() in DESCRIPTION_LABELS)),
        "place": joined(entries(freetext, "place")),
        "culture": joined(indexed.get("culture")),
        "topic": joined(indexed.get("topic")),
        "scientific_name": joined(indexed.get("scientific_name")),
        "common_name": joined(entries(freetext, "taxonomicName", lambda label: label.lower() == "common name")),
        "names": labelled(freetext, "name"),
        "credit_line": joined(entries(freetext, "creditLine")),
    }
