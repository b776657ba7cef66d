"""The Metropolitan Museum of Art: Collection API object records, one JSON object per line.

One row per image: ``primaryImage`` as ``<objectID>/0`` and each of ``additionalImages``
as ``<objectID>/<n>`` (n from 1, in the API's order).

Options:
    additional_images: also yield ``additionalImages`` (default true).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from curate import records, verdict
from curate.sources import AdapterOptions, parse_options, text
from curate.sources._fields import flag, ident, joined, json_records, kind, malformed, raw

# ``isPublicDomain: true`` means the Met releases the object's images under its Open
# Access policy as CC0; ``false`` objects are in copyright (or unknown) and the API
# serves no image for them.
LICENSES = {True: "CC0-1.0", False: "all-rights-reserved"}


class Options(AdapterOptions):
    additional_images: bool = True


def read(path: Path, source: str, options: dict | Options) -> Iterator[dict]:
    additional = parse_options(Options, options, source).additional_images
    return json_records(path, source, lambda record, origin: _rows(record, origin, source, additional))


def _rows(record: dict, origin: str, source: str, additional: bool) -> list[dict]:
    object_id = ident(record.get("objectID"))
    if object_id is None:
        return [records.rejected(source, None, "missing_id",
                                 f"{origin}: no usable objectID (objectID={record.get('objectID')!r})",
                                 origin=origin, raw=raw(record))]
    primary, extra = record.get("primaryImage"), record.get("additionalImages")
    if primary is not None and not isinstance(primary, str):
        return [malformed(source, origin, f"primaryImage is {kind(primary)}, expected a URL string",
                          record, object_id)]
    if extra is not None and not isinstance(extra, list):
        return [malformed(source, origin, f"additionalImages is {kind(extra)}, expected a list",
                          record, object_id)]
    described = _described(record, origin)
    images = image_urls(primary, extra if additional else None)
    if not images:
        return [records.rejected(source, object_id, "no_image",
                                 f"{origin}: primaryImage is empty" + _why_no_image(record, extra, additional),
                                 **described)]
    rows = []
    for n, url in images:
        source_id = f"{object_id}/{n}"
        if url is None:
            rows.append(records.rejected(source, source_id, "missing_url",
                                         f"{origin}: additionalImages[{n - 1}] is not a URL", **described))
        else:
            # rightsAndReproduction is the Met's rights line for in-copyright objects.
            rows.append(records.candidate(source, source_id, url=url,
                                          detail=text(record.get("rightsAndReproduction")), **described))
    return rows


def image_urls(primary: str | None, extra: list | None) -> list[tuple[int, str | None]]:
    """``(n, url)`` per image; an additional image that is not a usable URL keeps its slot with None."""
    first = text(primary)
    urls = [(0, first)] if first else []
    urls += [(n, text(u) if isinstance(u, str) else None) for n, u in enumerate(extra or [], start=1)]
    return urls


def _why_no_image(record: dict, extra: list | None, additional: bool) -> str:
    if extra and not additional:
        return " and additionalImages are off (option additional_images=false)"
    if flag(record.get("isPublicDomain")) is False:
        return " (isPublicDomain=false: the Met serves no image for it)"
    return ""


def _described(record: dict, origin: str) -> dict[str, Any]:
    """Everything but the url: shared by candidates and rejections, so a reviewer sees what was dropped."""
    public_domain = record.get("isPublicDomain")
    return dict(
        origin=origin,
        page_url=text(record.get("objectURL")),
        # The rights line speaks for in-copyright objects; beside isPublicDomain=true it is a conflict.
        **verdict.primary([*verdict.mapped("isPublicDomain", raw(public_domain), LICENSES.get(flag(public_domain))),
                           *verdict.pieces("rightsAndReproduction", text(record.get("rightsAndReproduction")),
                                           verdict.MENTION)]),
        creator=text(record.get("artistDisplayName")) or _constituents(record.get("constituents")),
        title=text(record.get("title")),
        date=text(record.get("objectDate")),
        meta=_meta(record),
    )


def _constituents(constituents: Any) -> str | None:
    """Names of the ``Artist`` constituents: some records fill these but not artistDisplayName."""
    if not isinstance(constituents, list):
        return None
    return joined([c.get("name") for c in constituents
                   if isinstance(c, dict) and str(c.get("role", "")).lower() == "artist"])


def tags(value: Any) -> str | None:
    """``tags``: plain strings in the 2019 API, ``{"term": ...}`` objects in later versions."""
    if not isinstance(value, list):
        return None
    return joined([t.get("term") if isinstance(t, dict) else t for t in value])


def _meta(record: dict) -> dict[str, str | None]:
    names = ("medium", "classification", "objectName", "culture", "department", "period", "dynasty", "reign",
             "portfolio", "dimensions", "creditLine", "accessionNumber", "artistRole", "artistDisplayBio",
             "artistNationality", "geographyType", "city", "state", "country", "region", "subregion")
    meta = {name: text(record.get(name)) for name in names}
    meta["tags"] = tags(record.get("tags"))
    return meta
