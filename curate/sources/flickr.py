"""Flickr: ``flickr.photos.search`` photos (with ``extras`` such as license, owner_name, url_*).

Input is JSON lines, each line a full response (``{"photos": {"photo": [...]}, "stat": "ok"}``)
or one photo object. One row per photo. The per-photo ``license`` is a Flickr license id,
mapped to a registry id through Flickr's license table (``flickr.photos.licenses.getInfo``).

Options:
    sizes: ``url_*`` extras tried in order (default ``url_o, url_l, url_c, url_z, url_m``).
    licenses_path: a license table to use instead of the packaged ``flickr_licenses.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Mapping

from pydantic import Field

from curate import licenses, records, verdict
from curate.sources import AdapterOptions, json_lines, parse_options, text
from curate.sources._html import strip_html

DEFAULT_SIZES = ("url_o", "url_l", "url_c", "url_z", "url_m")
DEFAULT_LICENSES = Path(__file__).with_name("flickr_licenses.json")
# Without url_* extras the photo is still addressable from server/id/secret; "_b" is the
# 1024 px size that every photo has (the original needs its own secret).
STATIC_URL = "https://live.staticflickr.com/{server}/{id}_{secret}_b.jpg"
PHOTO_PAGE = "https://www.flickr.com/photos/{owner}/{id}"
PHOTO_PAGE_NO_OWNER = "https://www.flickr.com/photo.gne?id={id}"


@dataclass(frozen=True)
class FlickrLicense:
    license: str | None  # registry id
    url: str | None


class Options(AdapterOptions):
    sizes: tuple[str, ...] = Field(default=DEFAULT_SIZES, min_length=1)
    licenses_path: Path = DEFAULT_LICENSES


def read(path: Path, source: str, options: dict | Options) -> Iterator[dict]:
    settings = parse_options(Options, options, source)
    table, sizes = license_table(settings.licenses_path), settings.sizes
    for origin, value, error in json_lines(Path(path)):
        if error:
            yield records.rejected(source, None, "malformed_record", f"{origin}: {error}", origin=origin, raw=value)
            continue
        for photo_origin, photo in _photos(origin, value):
            yield _row(source, photo_origin, photo, table, sizes)


@lru_cache(maxsize=8)
def license_table(path: Path) -> Mapping[str, FlickrLicense]:
    """Flickr license id (as a string: photos carry ``"9"``, getInfo ``9``) -> registry id and URL.

    Accepts the ``license`` array or a whole getInfo response. The URL is the more precise
    evidence (it carries the CC version), the name covers entries without one (0: All Rights Reserved).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"flickr license table {path}: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("licenses"), dict):
        data = data["licenses"].get("license")
    if not isinstance(data, list):
        raise ValueError(f"flickr license table {path}: expected a list of {{id, name, url}} objects")
    table = {}
    for entry in data:
        if not isinstance(entry, dict) or "id" not in entry:
            raise ValueError(f"flickr license table {path}: entry {entry!r} is not an {{id, name, url}} object")
        url = text(entry.get("url"))
        license_id, _ = licenses.normalize_any(url, text(entry.get("name")))
        table[str(entry.get("id"))] = FlickrLicense(license_id, url)
    return table


def _photos(origin: str, value: Any) -> Iterator[tuple[str, Any]]:
    """Photos in a line: each photo of a response (``#i`` keeps origins unique), or the line itself."""
    if isinstance(value, dict) and "photos" in value:
        photos = value["photos"].get("photo") if isinstance(value["photos"], dict) else None
        if not isinstance(photos, list):
            yield origin, value["photos"]  # rejected as not a photo object
            return
        for i, photo in enumerate(photos):
            yield f"{origin}#{i}", photo
    else:
        yield origin, value


def _row(source: str, origin: str, photo: Any, table: Mapping[str, FlickrLicense], sizes: tuple[str, ...]) -> dict:
    raw = json.dumps(photo, ensure_ascii=False)

    def reject(source_id: str | None, reason: str, detail: str) -> dict:
        return records.rejected(source, source_id, reason, f"{origin}: {detail}", origin=origin, raw=raw)

    if not isinstance(photo, dict):
        return reject(None, "malformed_record", f"expected a photo object, got {type(photo).__name__}")
    if photo.get("stat") == "fail":
        return reject(None, "malformed_record", f"error response: {photo.get('message')!r}")
    photo_id = photo.get("id")
    if photo_id is None or photo_id == "":
        return reject(None, "missing_id", "no id")
    if isinstance(photo_id, bool) or not isinstance(photo_id, (str, int)):
        return reject(None, "malformed_record", f"id is {type(photo_id).__name__}, not a string")
    source_id = str(photo_id)
    if text(photo.get("media")) not in (None, "photo"):
        return reject(source_id, "not_image", f"media is {photo['media']!r}")
    url = _url(photo, sizes)
    if url is None:
        return reject(source_id, "missing_url", f"none of {', '.join(sizes)} and no server/secret")

    raw_license = photo.get("license")
    license_value = str(raw_license) if isinstance(raw_license, (str, int)) and str(raw_license) != "" else None
    entry = table.get(license_value) if license_value is not None else None
    owner = text(photo.get("owner"))
    return records.candidate(
        source, source_id, origin=origin, url=url,
        page_url=(PHOTO_PAGE.format(owner=owner, id=source_id) if owner
                  else PHOTO_PAGE_NO_OWNER.format(id=source_id)),
        **verdict.primary([*verdict.mapped("license", license_value, entry.license if entry else None),
                           *_description_evidence(photo)]),
        license_url=entry.url if entry else None,
        creator=text(photo.get("ownername")) or owner,
        title=text(photo.get("title")),
        date=_date_taken(photo),
        meta=_meta(photo),
    )


def _url(photo: Mapping, sizes: tuple[str, ...]) -> str | None:
    for size in sizes:
        url = photo.get(size)
        if isinstance(url, str) and url.strip():
            return url.strip()
    parts = {key: text(photo.get(key)) for key in ("server", "id", "secret")}
    return STATIC_URL.format(**parts) if all(parts.values()) else None


def _date_taken(photo: Mapping) -> str | None:
    # With datetakenunknown=1 Flickr fills datetaken with the upload time: not a creation date.
    if str(photo.get("datetakenunknown")) == "1":
        return None
    return text(photo.get("datetaken"))


def _description(photo: Mapping) -> Any:
    description = photo.get("description")
    return description.get("_content") if isinstance(description, dict) else description


def _description_evidence(photo: Mapping) -> list[verdict.Piece]:
    """The photographer's own words beside the license id ("all rights reserved", a BY-NC link)
    count against it; a description that names no license says nothing."""
    description = _description(photo)
    if not isinstance(description, str):
        return []
    return verdict.pieces("description._content", description, verdict.MENTION)


def _meta(photo: Mapping) -> dict[str, Any]:
    tags = text(photo.get("tags")) or ""
    return {
        "description": strip_html(_description(photo)),
        "tags": tags.split(),
        "source_width": _int(photo.get("o_width")),
        "source_height": _int(photo.get("o_height")),
    }


def _int(value: Any) -> int | None:
    """``o_width``/``o_height`` come as strings ("4000"); widths of url_* sizes as numbers."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
