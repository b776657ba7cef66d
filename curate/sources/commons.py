"""Wikimedia Commons: MediaWiki API ``prop=imageinfo`` page objects with ``extmetadata``.

Input is JSON lines, each line a page object (a value of ``query.pages``) or a whole API
response; a file holding one pretty-printed response is read too. One row per page.

Options:
    language: language picked from multilingual (``iiextmetadatamultilang``) values for
        single-valued fields such as title and creator (default ``en``, else the first).
"""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

from curate import records, verdict
from curate.sources import AdapterOptions, json_documents, parse_options, text
from curate.sources._html import strip_html, text_by_language

EXT = "imageinfo[0].extmetadata"
PAGE_KEYS = frozenset({"pageid", "title", "imageinfo", "ns"})
# Every field that speaks about the license is evidence, the machine id first (the license
# column shows the first one read). "No restrictions" files have no ``License`` at all, so
# each field is evidence in its own right; the verdict weighs them together.
LICENSE_FIELDS = ("License", "LicenseShortName", "LicenseUrl", "UsageTerms")
COPYRIGHTED_FIELD = "Copyrighted"
# Categories carry the license templates too ("PD NASA", "CC-Zero", "PD-old-70-expired"); of
# the other categories ("Paintings by ...") only those that name a license count.
CATEGORY_FIELD = "Categories"
# Upload-log sentences in the Artist field name who uploaded a file, not who made it.
_UPLOAD_LOG = re.compile(r"\b(original uploader|uploaded by|upload(ed)? from|transferred from|hochgeladen von|"
                         r"bot upload|file:upload bot|moved from|übertragen aus)\b",
                         re.IGNORECASE)
# Commons hosts video, audio, scanned books and 3D models next to images; only still
# images go on. ``mediatype`` is present when the query asked for it, else the file type
# decides. Both are deny-lists: a value we do not know (a new file type) is left to the fetcher.
NOT_STILL_MEDIATYPES = frozenset({"AUDIO", "VIDEO", "MULTIMEDIA", "OFFICE", "TEXT", "EXECUTABLE", "ARCHIVE", "3D"})
NOT_STILL_TYPES = frozenset({"webm", "ogv", "ogg", "oga", "opus", "mp3", "wav", "flac", "mid", "midi",
                             "mpg", "mpeg", "pdf", "djvu", "stl"})


class Options(AdapterOptions):
    language: str = "en"


def read(path: Path, source: str, options: dict | Options) -> Iterator[dict]:
    language = parse_options(Options, options, source).language
    for origin, value, error in json_documents(Path(path)):
        if error:
            yield records.rejected(source, None, "malformed_record", f"{origin}: {error}", origin=origin, raw=value)
            continue
        for page_origin, page in _pages(origin, value):
            yield _row(source, page_origin, page, language)


def _pages(origin: str, value: Any) -> Iterator[tuple[str, Any]]:
    """Page objects in a line: the line itself, or each page of a response (``#key`` keeps origins unique)."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _pages(f"{origin}#{i}", item)
        return
    if isinstance(value, dict) and "query" in value:
        query = value["query"]
        pages = query.get("pages") if isinstance(query, dict) else query
        if isinstance(pages, dict):
            for key, page in pages.items():
                yield f"{origin}#{key}", page
        elif isinstance(pages, list):  # formatversion=2 lists pages
            for i, page in enumerate(pages):
                yield f"{origin}#{i}", page
        elif pages is not None:
            yield origin, pages  # not a page object: rejected as malformed
        return
    yield origin, value


def _row(source: str, origin: str, page: Any, language: str) -> dict:
    raw = json.dumps(page, ensure_ascii=False)

    def reject(source_id: str | None, reason: str, detail: str) -> dict:
        return records.rejected(source, source_id, reason, f"{origin}: {detail}", origin=origin, raw=raw)

    if not isinstance(page, dict):
        return reject(None, "malformed_record", f"expected a page object, got {type(page).__name__}")
    if not PAGE_KEYS & page.keys():
        return reject(None, "malformed_record", f"not a page object (keys: {', '.join(sorted(page)[:8])})")
    pageid = page.get("pageid")
    if pageid is None or pageid == "":
        return reject(None, "missing_id", "no pageid" + (" (page is missing)" if "missing" in page else ""))
    if isinstance(pageid, bool) or not isinstance(pageid, (int, str)) or not str(pageid).isdigit():
        return reject(None, "malformed_record", f"pageid {pageid!r} is not a page id")
    source_id = str(pageid)
    infos = page.get("imageinfo")
    if not infos:
        return reject(source_id, "no_image", "page has no imageinfo")
    if not isinstance(infos, list) or not isinstance(infos[0], dict):
        return reject(source_id, "malformed_record", "imageinfo is not a list of objects")
    info = infos[0]
    url = info.get("url")
    if url is None or url == "":
        return reject(source_id, "missing_url", "no imageinfo[0].url")
    if not isinstance(url, str):
        return reject(source_id, "malformed_record", f"imageinfo[0].url is {type(url).__name__}, not a string")
    ext = info.get("extmetadata") or {}
    if not isinstance(ext, dict):
        return reject(source_id, "malformed_record", "imageinfo[0].extmetadata is not an object")
    file_type = _file_type(url)
    not_still = _not_still(page, info, file_type)
    if not_still:
        return reject(source_id, "not_image", not_still)

    return records.candidate(
        source, source_id, origin=origin, url=url,
        page_url=text(info.get("descriptionurl")) or text(info.get("descriptionshorturl")),
        **verdict.primary(_evidence(ext, language)),
        license_url=_single(ext, "LicenseUrl", language),
        creator=_creator(_single(ext, "Artist", language)),
        title=strip_html(_single(ext, "ObjectName", language)) or _title_from_file(page.get("title")),
        date=strip_html(_single(ext, "DateTimeOriginal", language)),
        meta=_meta(page, info, ext, file_type, language),
    )


def _value(ext: Mapping, name: str) -> Any:
    """The value of an extmetadata entry (``{"value": ..., "source": ...}``), None when absent."""
    entry = ext.get(name)
    return entry.get("value") if isinstance(entry, dict) else entry


def _languages(value: Any) -> dict[str, Any] | None:
    """A multilingual value (``{"en": .., "de": .., "_type": "lang"}``) as {lang: value}."""
    if not isinstance(value, dict):
        return None
    return {lang: v for lang, v in value.items() if not lang.startswith("_")}


def _single(ext: Mapping, name: str, language: str) -> str | None:
    value = _value(ext, name)
    by_lang = _languages(value)
    if by_lang is not None:
        value = by_lang.get(language, next(iter(by_lang.values()), None))
    return text(value)


def _evidence(ext: Mapping, language: str) -> list[verdict.Piece]:
    """Every license-bearing field: the license fields, the copyrighted flag and the categories."""
    found = [piece for name in LICENSE_FIELDS
             for piece in verdict.pieces(f"{EXT}.{name}.value", _single(ext, name, language))]
    found += verdict.pieces(f"{EXT}.{COPYRIGHTED_FIELD}.value", _single(ext, COPYRIGHTED_FIELD, language),
                            verdict.COPYRIGHTED)
    for category in _categories(ext, language):
        found += verdict.pieces(f"{EXT}.{CATEGORY_FIELD}.value", category, verdict.MENTION)
    return found


def _categories(ext: Mapping, language: str) -> list[str]:
    return [c.strip() for c in (_single(ext, CATEGORY_FIELD, language) or "").split("|") if c.strip()]


def _creator(artist: str | None) -> str | None:
    """The Artist field's visible text, unless it is an upload-log sentence rather than a name."""
    name = strip_html(artist)
    return None if name is None or _UPLOAD_LOG.search(name) else name


def _description(ext: Mapping) -> str | dict[str, str] | None:
    value = _value(ext, "ImageDescription")
    by_lang = _languages(value)
    if by_lang is not None:
        texts = {lang: strip_html(v) for lang, v in by_lang.items()}
        return {lang: t for lang, t in texts.items() if t} or None
    return text_by_language(value) or strip_html(value)


def _meta(page: Mapping, info: Mapping, ext: Mapping, file_type: str | None, language: str) -> dict[str, Any]:
    return {
        "description": _description(ext),
        "categories": _categories(ext, language),
        "credit": strip_html(_single(ext, "Credit", language)),
        "artist": strip_html(_single(ext, "Artist", language)),
        "attribution": strip_html(_single(ext, "Attribution", language)),
        "copyrighted": _single(ext, "Copyrighted", language),
        "attribution_required": _single(ext, "AttributionRequired", language),
        "restrictions": _single(ext, "Restrictions", language),
        "mime": text(info.get("mime")),
        "mediatype": text(info.get("mediatype") or page.get("mediatype")),
        "file_type": file_type,
        "source_width": info.get("width"),
        "source_height": info.get("height"),
        "page_count": page.get("pagecount"),
        "uploader": text(info.get("user")),
    }


def _file_type(url: str) -> str | None:
    ext = posixpath.splitext(urlsplit(url).path)[1].lstrip(".").lower()
    return ext or None


def _not_still(page: Mapping, info: Mapping, file_type: str | None) -> str | None:
    mediatype = text(info.get("mediatype") or page.get("mediatype"))
    if mediatype and mediatype.upper() in NOT_STILL_MEDIATYPES:
        return f"mediatype {mediatype} is not a still image"
    if file_type in NOT_STILL_TYPES:
        return f"file type {file_type} is not a still image"
    return None


def _title_from_file(title: Any) -> str | None:
    """``File:Foo bar.jpg`` -> ``Foo bar``."""
    name = text(title)
    if not name:
        return None
    name = name.split(":", 1)[1] if name.lower().startswith("file:") else name
    return text(posixpath.splitext(name)[0])
