"""J. Paul Getty Museum: Linked Art JSON-LD objects from data.getty.edu, one object a line.

``path`` is a JSON-lines file of ``HumanMadeObject`` records (what ``cleanroom sources pull getty``
writes), or one object as ``data.getty.edu/museum/collection/object/<uuid>`` serves it. One row
per object, keyed by the uuid of its ``id``; its image is the first ``representation``
(a ``VisualItem``) whose ``digitally_shown_by`` ``DigitalObject`` is an IIIF Image API service
(``media.getty.edu/iiif/image/<id>``), else the VisualItem's own JPEG.

License evidence: every ``Right`` in ``subject_to`` on the object, on that VisualItem and on its
DigitalObject: each ``classified_as`` id (a link: creativecommons.org/publicdomain/zero/1.0/ for
CC0, rightsstatements.org for in copyright) and label, the Right's label and its
``referred_to_by`` statements. Nothing is assumed: an object whose image carries no Right is
``license_unknown``.

Options:
    size: IIIF size parameter (default ``!1024,1024``: best fit in a 1024 px box).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from curate import records, verdict
from curate.sources import AdapterOptions, json_documents, parse_options, text
from curate.sources._fields import guarded, joined, kind, malformed, raw, require_path

OBJECT_PREFIX = "https://data.getty.edu/museum/collection/object/"
IIIF_IMAGE_API = "http://iiif.io/api/image"
# The AAT terms Getty classifies statements and names with.
PREFERRED_TERM = "http://vocab.getty.edu/aat/300404670"
MATERIALS = "http://vocab.getty.edu/aat/300435429"
DIMENSIONS = "http://vocab.getty.edu/aat/300435430"
CREDIT_LINE = "http://vocab.getty.edu/aat/300435418"
DESCRIPTION = "http://vocab.getty.edu/aat/300080091"
OBJECT_TYPE = "http://vocab.getty.edu/aat/300435443"
PLACE_CREATED = "http://vocab.getty.edu/aat/300435448"
ACCESSION_NUMBER = "http://vocab.getty.edu/aat/300312355"
PRODUCER_NAME = "https://data.getty.edu/local/thesaurus/producer-name"
HOMEPAGE_MARK = "getty.edu/art/collection/object/"


class Options(AdapterOptions):
    size: str = "!1024,1024"


def read(path: Path, source: str, options: dict | Options) -> Iterator[dict]:
    size = parse_options(Options, options, source).size
    return _read(require_path(path, source), source, size)


def _read(path: Path, source: str, size: str) -> Iterator[dict]:
    for origin, value, error in json_documents(path):
        if error:
            yield malformed(source, origin, error, value)
        else:
            yield from guarded(source, origin, value, lambda record, at: _rows(record, at, source, size))


def _rows(record: dict, origin: str, source: str, size: str) -> list[dict]:
    source_id = object_id(record.get("id"))
    if source_id is None:
        return [records.rejected(source, None, "missing_id", f"{origin}: no object uuid in id={record.get('id')!r}",
                                 origin=origin, raw=raw(record))]
    if record.get("type") != "HumanMadeObject":
        return [malformed(source, origin, f"type is {record.get('type')!r}, expected 'HumanMadeObject'", record,
                          source_id)]
    representations = _list(record, "representation")
    if not representations:
        return [records.rejected(source, source_id, "no_image", f"{origin}: no representation (no image published)",
                                 **_described(record, origin, None, None))]
    visual, digital = _image(representations)
    described = _described(record, origin, visual, digital)
    url = image_url(visual, digital, size)
    if url is None:
        return [records.rejected(source, source_id, "missing_url",
                                 f"{origin}: representation has no IIIF image service or image id", **described)]
    return [records.candidate(source, source_id, url=url, **described)]


def object_id(value: Any) -> str | None:
    """The uuid at the end of ``https://data.getty.edu/museum/collection/object/<uuid>``."""
    uri = text(value) if isinstance(value, str) else None
    if uri is None:
        return None
    tail = uri.rstrip("/").rsplit("/", 1)[-1]
    return tail if uri.startswith(OBJECT_PREFIX) and tail else None


def _list(node: dict, field: str) -> list[dict]:
    """A Linked Art list property; a value of another shape is a record we did not foresee."""
    value = node.get(field)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError(f"{field} is {kind(value)}, expected an array of objects")
    return value


def _image(representations: list[dict]) -> tuple[dict, dict | None]:
    """The first VisualItem with an IIIF image service (else the first one), and that DigitalObject."""
    for visual in representations:
        for digital in _list(visual, "digitally_shown_by"):
            if _is_iiif_image(digital):
                return visual, digital
    return representations[0], None


def _is_iiif_image(digital: dict) -> bool:
    standards = digital.get("conforms_to")
    ids = [text(s.get("id")) for s in standards if isinstance(s, dict)] if isinstance(standards, list) else []
    return any(i and i.startswith(IIIF_IMAGE_API) for i in ids) and bool(text(digital.get("id")))


def image_url(visual: dict | None, digital: dict | None, size: str) -> str | None:
    if digital is not None:
        return f"{text(digital['id']).rstrip('/')}/full/{size}/0/default.jpg"
    return text(visual.get("id")) if visual else None


def _described(record: dict, origin: str, visual: dict | None, digital: dict | None) -> dict[str, Any]:
    """Everything but the url: shared by candidates and rejections, so a reviewer sees what was dropped."""
    holders = [("subject_to", record), ("representation.subject_to", visual),
               ("digitally_shown_by.subject_to", digital)]
    found = [piece for field, holder in holders if holder for right in _list(holder, "subject_to")
             for piece in _right_pieces(field, right)]
    produced_by = record.get("produced_by") if isinstance(record.get("produced_by"), dict) else {}
    return dict(
        origin=origin,
        page_url=_homepage(record),
        **verdict.primary(found),
        creator=creator(produced_by),
        title=_title(record),
        date=_date(produced_by),
        meta=_meta(record),
    )


def _right_pieces(field: str, right: dict) -> list[verdict.Piece]:
    """A Right's evidence: its classification ids are license URIs; labels and statements are free text."""
    classes = [c for c in right.get("classified_as") or [] if isinstance(c, dict)]
    statements = [s for s in right.get("referred_to_by") or [] if isinstance(s, dict)]
    return [
        *(p for c in classes for p in verdict.pieces(f"{field}.classified_as (link)", text(c.get("id")),
                                                     verdict.LINK)),
        *(p for c in classes for p in verdict.pieces(f"{field}.classified_as._label", text(c.get("_label")),
                                                     verdict.MENTION)),
        *verdict.pieces(f"{field}._label", text(right.get("_label")), verdict.MENTION),
        *(p for s in statements for p in verdict.pieces(f"{field}.referred_to_by", text(s.get("content")),
                                                        verdict.MENTION)),
    ]


def _classified(node: dict, term: str) -> bool:
    return any(isinstance(c, dict) and c.get("id") == term for c in node.get("classified_as") or [])


def _statement(record: dict, term: str) -> str | None:
    """The content of the ``referred_to_by`` statements classified as ``term``, joined."""
    return joined([s.get("content") for s in _list(record, "referred_to_by") if _classified(s, term)])


def _title(record: dict) -> str | None:
    names = [n for n in _list(record, "identified_by") if n.get("type") == "Name"]
    preferred = [n for n in names if _classified(n, PREFERRED_TERM)]
    return next((text(n.get("content")) for n in preferred + names if text(n.get("content"))),
                text(record.get("_label")))


def creator(produced_by: dict) -> str | None:
    """Who carried out the production (or its parts), else the producer name statement."""
    parts = [produced_by, *_list(produced_by, "part")]
    names = joined([a.get("_label") for part in parts for a in _list(part, "carried_out_by")])
    return names or _statement(produced_by, PRODUCER_NAME)


def _date(produced_by: dict) -> str | None:
    timespan = produced_by.get("timespan")
    names = timespan.get("identified_by") if isinstance(timespan, dict) else None
    return joined([n.get("content") for n in names if isinstance(n, dict)]) if isinstance(names, list) else None


def _homepage(record: dict) -> str | None:
    pages = [text(s.get("id")) for s in _list(record, "subject_of")]
    return next((p for p in pages if p and HOMEPAGE_MARK in p), None)


def _meta(record: dict) -> dict[str, str | None]:
    accession = [i.get("content") for i in _list(record, "identified_by")
                 if i.get("type") == "Identifier" and _classified(i, ACCESSION_NUMBER)]
    return {
        "accession_number": joined(accession),
        "object_type": _statement(record, OBJECT_TYPE),
        "medium": _statement(record, MATERIALS),
        "dimensions": _statement(record, DIMENSIONS),
        "place_created": _statement(record, PLACE_CREATED),
        "credit_line": _statement(record, CREDIT_LINE),
        # Getty's descriptions may carry their own license (CC BY), apart from the image's CC0.
        "description": _statement(record, DESCRIPTION),
        "classification": joined([c.get("_label") for c in record.get("classified_as") or [] if isinstance(c, dict)]),
    }
