"""Finna (Finnish archives, libraries and museums): Finna API ``search`` records.

Input is JSON lines, each line a record or a whole response (``{"records": [...]}``); a
file holding one pretty-printed response is read too. One row per entry of ``images``.

Options:
    base_url: host the site-relative image paths are fetched from (default ``https://api.finna.fi``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import quote

from curate import records, verdict
from curate.sources import AdapterOptions, json_documents, parse_options, text

DEFAULT_BASE_URL = "https://api.finna.fi"
RECORD_PAGE = "https://www.finna.fi/Record/{}"
RESPONSE_KEYS = frozenset({"records", "resultCount", "status"})
# The Finnish Heritage Agency gives no date field; the production date ("valmistusaika")
# travels as a subject: "valmistusaika: 11.06.1923", "valmistusaika 1960 luku".
_PRODUCTION_DATE = re.compile(r"^valmistusaika\s*:?\s*(.+)$", re.IGNORECASE)
_PRODUCTION_WORD = re.compile(r"\bvalmistusaika\s*", re.IGNORECASE)  # "1931, valmistusaika marraskuu"


class Options(AdapterOptions):
    base_url: str = DEFAULT_BASE_URL


def read(path: Path, source: str, options: dict | Options) -> Iterator[dict]:
    base_url = parse_options(Options, options, source).base_url.rstrip("/")
    for origin, value, error in json_documents(Path(path)):
        if error:
            yield records.rejected(source, None, "malformed_record", f"{origin}: {error}", origin=origin, raw=value)
            continue
        for record_origin, record in _records(origin, value):
            yield from _rows(source, record_origin, record, base_url)


def _records(origin: str, value: Any) -> Iterator[tuple[str, Any]]:
    """Records in a line: the line itself, or each of a response's ``records`` (``#i`` keeps origins unique)."""
    if isinstance(value, dict) and "id" not in value and RESPONSE_KEYS & value.keys():
        if value.get("status", "OK") != "OK" or not isinstance(value.get("records", []), list):
            yield origin, value  # an error response: rejected as not a record
            return
        value = value.get("records", [])  # an empty search has no "records"
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield f"{origin}#{i}", item
    else:
        yield origin, value


def _rows(source: str, origin: str, record: Any, base_url: str) -> Iterator[dict]:
    raw = json.dumps(record, ensure_ascii=False)

    def reject(source_id: str | None, reason: str, detail: str) -> dict:
        return records.rejected(source, source_id, reason, f"{origin}: {detail}", origin=origin, raw=raw)

    if not isinstance(record, dict):
        yield reject(None, "malformed_record", f"expected a record object, got {type(record).__name__}")
        return
    record_id = record.get("id")
    if record_id is None or record_id == "":
        status = f" (response status {record['status']!r})" if "status" in record else ""
        yield reject(None, "missing_id" if not status else "malformed_record", "no id" + status)
        return
    if not isinstance(record_id, str):
        yield reject(None, "malformed_record", f"id is {type(record_id).__name__}, not a string")
        return
    images = record.get("images")
    if not images:
        yield reject(record_id, "no_image", "record has no images")
        return
    if not isinstance(images, list):
        yield reject(record_id, "malformed_record", f"images is {type(images).__name__}, not a list")
        return

    shared = _shared_fields(record, record_id)
    for n, image in enumerate(images):
        source_id = f"{record_id}/{n}"
        if not isinstance(image, str):
            yield reject(source_id, "malformed_record", f"images[{n}] is {type(image).__name__}, not a string")
        elif not image.strip():
            yield reject(source_id, "missing_url", f"images[{n}] is empty")
        else:
            yield records.candidate(source, source_id, origin=origin, url=_image_url(base_url, image.strip()),
                                    **shared)


def _shared_fields(record: Mapping, record_id: str) -> dict[str, Any]:
    """Record-level fields every image of the record carries."""
    rights = record.get("imageRights") if isinstance(record.get("imageRights"), dict) else {}
    # The short label and the link are both statements of the image license; the verdict
    # weighs them together (a CC0 label with a BY-NC link is a conflict, not CC0).
    evidence = [*verdict.pieces("imageRights.copyright", text(rights.get("copyright"))),
                *verdict.pieces("imageRights.link", text(rights.get("link")))]
    return {
        "page_url": RECORD_PAGE.format(quote(record_id, safe=":")),
        **verdict.primary(evidence),
        "license_url": text(rights.get("link")),
        "creator": "; ".join(_authors(record)) or None,
        "title": text(record.get("title")) or text(record.get("shortTitle")),
        "date": _date(record),
        "meta": _meta(record),
    }


def _image_url(base_url: str, image: str) -> str:
    if image.startswith(("http://", "https://")):
        return image
    return f"{base_url}/{image.lstrip('/')}"


def _people(value: Any) -> list[tuple[str, str | None]]:
    """(name, role) of a list of ``{name, role}`` objects or plain names."""
    people = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, dict):
            name = text(item.get("name"))
            if name:
                people.append((name, text(item.get("role"))))
        elif text(item):
            people.append((text(item), None))
    return people


def _all_people(record: Mapping) -> list[tuple[str, str | None]]:
    presenters = record.get("presenters")
    # Newer API versions wrap presenters as {"presenters": [...], "details": [...]}.
    if isinstance(presenters, dict):
        presenters = presenters.get("presenters")
    return _people(record.get("nonPresenterAuthors")) + _people(presenters)


def _authors(record: Mapping) -> list[str]:
    return list(dict.fromkeys(name for name, _ in _all_people(record)))


def _date(record: Mapping) -> str | None:
    year = text(record.get("year"))
    if year:
        return year
    dates = _strings(record.get("humanReadablePublicationDates"))
    if dates:
        return dates[0]
    for subject in _subjects(record):
        match = _PRODUCTION_DATE.match(subject)
        if match:
            return text(_PRODUCTION_WORD.sub("", match[1]))
    return None


def _strings(value: Any) -> list[str]:
    """A string or a list of strings as a list of non-empty strings."""
    values = value if isinstance(value, list) else [value]
    return [s for s in (text(v) for v in values) if s]


def _subjects(record: Mapping) -> list[str]:
    """``subjects`` is a list of lists of strings (subject headings with subdivisions): flattened."""
    subjects: list[str] = []
    for item in record.get("subjects") or []:
        subjects.extend(_strings(item))
    return list(dict.fromkeys(subjects))


def _labels(value: Any) -> list[str]:
    """Display labels of hierarchical facets (``{"value": "1/Museovirasto/..", "translated": ".."}``)."""
    labels = []
    for item in value if isinstance(value, list) else []:
        label = text(item.get("translated")) if isinstance(item, dict) else text(item)
        if label:
            labels.append(label)
    return list(dict.fromkeys(labels))


def _meta(record: Mapping) -> dict[str, Any]:
    return {
        "summary": _strings(record.get("summary")),
        "subjects": _subjects(record),
        "formats": _labels(record.get("formats")),
        "buildings": _labels(record.get("buildings")),
        "authors": [f"{name} ({role})" if role else name for name, role in _all_people(record)],
        "languages": _strings(record.get("languages")),
    }
