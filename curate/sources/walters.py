"""Walters Art Museum: collection objects as its API (api.thewalters.org/v1/objects) serves them.

``path`` is a JSON-lines file of objects (one element of a response's ``Items`` a line, what
``cleanroom sources pull walters`` writes), or one object file of the museum's published dump
(github.com/WaltersArtMuseum/api-thewalters-org, ``objects/data/**/<ObjectID>.json``). One row per
object, keyed by ``ObjectID``; its image is ``PrimaryImage.Raw`` (API) or the ``IsPrimary``
entry of ``Images`` (dump), the full-size file on static.thewalters.org / art.thewalters.org.

License evidence: the records carry no license field. The Walters publish one set of terms
for all of them (the dump's LICENSE: images of its works believed in the public domain under
CC0, except loaned works and works under an artist's copyright); the manifest states them in
the ``terms`` option. They apply to a record unless its ``CreditLine`` says it is a loan, which
the terms except: that record's evidence is the credit line, read as all rights reserved.
Without ``terms`` every record is ``license_unknown``: nothing is assumed here.

Options:
    terms: the license the Walters publish for their collection images (a URL or name the
        registry reads), e.g. ``https://creativecommons.org/publicdomain/zero/1.0/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from curate import records, verdict
from curate.sources import AdapterOptions, json_documents, parse_options, text
from curate.sources._fields import guarded, ident, joined, kind, malformed, raw, require_path

PAGE_URL = "https://art.thewalters.org/detail/{id}"
# Credit lines of works the Walters hold on loan ("Loaned by the Directors of ...", "Lent by ...",
# "On loan from ..."): their terms do not cover them.
LOAN = re.compile(r"^\s*(loaned by|lent by|on loan)\b", re.IGNORECASE)
TERMS_FIELD = "options.terms (the Walters' published image terms)"


class Options(AdapterOptions):
    terms: str | None = None


def read(path: Path, source: str, options: dict | Options) -> Iterator[dict]:
    terms = text(parse_options(Options, options, source).terms)
    return _read(require_path(path, source), source, terms)


def _read(path: Path, source: str, terms: str | None) -> Iterator[dict]:
    for origin, value, error in json_documents(path):
        if error:
            yield malformed(source, origin, error, value)
        else:
            yield from guarded(source, origin, value, lambda record, at: _rows(record, at, source, terms))


def _rows(record: dict, origin: str, source: str, terms: str | None) -> list[dict]:
    source_id = ident(record.get("ObjectID"))
    if source_id is None:
        return [records.rejected(source, None, "missing_id",
                                 f"{origin}: no usable ObjectID (ObjectID={record.get('ObjectID')!r})",
                                 origin=origin, raw=raw(record))]
    described = _described(record, source_id, origin, terms)
    url = image_url(record)
    if url is None:
        return [records.rejected(source, source_id, "no_image",
                                 f"{origin}: no PrimaryImage.Raw and no primary Images entry", **described)]
    # A loan's credit line is the note a reviewer of its rejection wants.
    return [records.candidate(source, source_id, url=url, detail=loan(record), **described)]


def image_url(record: dict) -> str | None:
    """``PrimaryImage.Raw`` (API), else ``Raw`` of the ``IsPrimary`` (else first) ``Images`` entry (dump)."""
    primary = record.get("PrimaryImage")
    if primary is not None and not isinstance(primary, dict):
        raise ValueError(f"PrimaryImage is {kind(primary)}, expected an object of sizes")
    if primary and text(primary.get("Raw")):
        return text(primary["Raw"])
    images = record.get("Images") or []
    if not isinstance(images, list):
        raise ValueError(f"Images is {kind(images)}, expected an array")
    entries = [i for i in images if isinstance(i, dict) and isinstance(i.get("ImageURLs"), dict)]
    entries.sort(key=lambda i: i.get("IsPrimary") is not True)  # stable: the primary first, then rank order
    return next((text(i["ImageURLs"].get("Raw")) for i in entries if text(i["ImageURLs"].get("Raw"))), None)


def loan(record: dict) -> str | None:
    """The credit line of a work on loan to the Walters, else None."""
    credit = text(record.get("CreditLine"))
    return credit if credit and LOAN.match(credit) else None


def evidence(record: dict, terms: str | None) -> list[verdict.Piece]:
    if loan(record):
        return verdict.mapped("CreditLine", loan(record), "all-rights-reserved")
    return [*verdict.pieces(TERMS_FIELD, terms), *verdict.pieces("CreditLine", text(record.get("CreditLine")),
                                                                 verdict.MENTION)]


def creator(record: dict) -> str | None:
    """``Creator`` (API), else the dump's ``Creators[].ConcatDisplayName`` (often a culture: "Iranian")."""
    creators = record.get("Creators")
    names = [c.get("ConcatDisplayName") for c in creators if isinstance(c, dict)] if isinstance(creators, list) else []
    return text(record.get("Creator")) or joined(names)


def _described(record: dict, source_id: str, origin: str, terms: str | None) -> dict[str, Any]:
    """Everything but the url: shared by candidates and rejections, so a reviewer sees what was dropped."""
    return dict(
        origin=origin,
        page_url=text(record.get("ResourceURL")) or PAGE_URL.format(id=source_id),
        **verdict.primary(evidence(record, terms)),
        creator=creator(record),
        title=text(record.get("Title")),
        date=text(record.get("DateText")) or text(record.get("Dated")),
        meta=_meta(record),
    )


def _meta(record: dict) -> dict[str, str | None]:
    meta = {name: text(record.get(name)) for name in (
        "ObjectNumber", "ObjectName", "Medium", "Dimensions", "Classification", "Collection", "Culture", "Period",
        "Dynasty", "Reign", "Style", "Inscriptions", "Keywords", "CreditLine")}
    # The longer descriptions are GFDL, not CC0 (the dump's LICENSE): the key says so.
    meta["description_gfdl"] = text(record.get("Description"))
    return meta
