"""One license verdict per record, from every piece of its evidence.

Adapters hand over every license-bearing field they have as ``Piece``s; ``decide`` reads
each one and weighs them together against the policy, and ``apply_policy`` is the batch
stage that does it for a record table. The rules, in order:

1. A permission or opt-in piece counts only when a record backs it (``verified``: a
   permission file the manifest names, an active consent in the contributions store); it
   then decides. The same claim in free text is ``permission_unverified``.
2. Pieces that name licenses of two families, or one the policy admits and one it
   refuses, or a family that contradicts the source's own "copyrighted" flag, are a
   ``license_conflict``; the detail quotes every piece.
3. Otherwise the license the pieces agree on is decided by the policy; evidence we cannot
   read beside it makes the record ``license_unknown`` rather than let it pass on the
   pieces we could read.

Evidence that says nothing ("see description", an empty value, a link to a user page, a
category that is not a license) is ignored, never a conflict.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import pyarrow as pa

from curate import licenses, records, stages
from curate.licenses import UNRECOGNISED, Policy, Reading

stages.declare("policy", rejected={
    "license_unknown": "no piece of evidence names a license the registry knows",
    "license_not_allowed": "the license is not allowed by the run's policy",
    "license_conflict": "pieces of evidence disagree, or one names a license the policy refuses",
    "permission_unverified": "a permission or opt-in claim with no permission file or active consent",
})

STATEMENT = "statement"  # a license field: it must be read, or say nothing
MENTION = "mention"  # one of many categories or templates: it counts only when it names a license
LINK = "link"  # a link target inside an HTML value: it counts when it is read or points at a license page
MAPPED = "mapped"  # read by the adapter with the source's own table (the Met's isPublicDomain)
COPYRIGHTED = "copyrighted"  # the source's yes/no statement that the work is under copyright
KINDS = (STATEMENT, MENTION, LINK, MAPPED, COPYRIGHTED)

# Families that are claims about a record on file, not a license anybody can state.
CLAIM_FAMILIES = frozenset({"permission", "opt-in"})

_SHOWN_CHARS = 200
_TRUE, _FALSE = frozenset({"true", "yes", "1"}), frozenset({"false", "no", "0"})


@dataclass(frozen=True)
class Piece:
    field: str
    value: str
    kind: str = STATEMENT
    license: str | None = None  # MAPPED: the adapter's reading of ``value``
    verified: str | None = None  # permission or opt-in: the record that backs the claim

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v is not None and (k, v) != ("kind", STATEMENT)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Piece:
        return cls(**data)

    def quoted(self) -> str:
        value = self.value if len(self.value) <= _SHOWN_CHARS else self.value[:_SHOWN_CHARS] + "..."
        return f"{self.field} {value!r}"


def pieces(field: str, value: Any, kind: str = STATEMENT) -> list[Piece]:
    """The pieces of one raw field value: none when absent; an HTML value's text and each of its
    link targets apart; each license a Wikimedia template names apart."""
    if value is None or value == "":
        return []
    value = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text, hrefs = licenses.html_pieces(value)
    found = [Piece(field, part, kind) for part in licenses.template_parts(text)] if text else []
    return found + [Piece(f"{field} (link)", href, LINK) for href in hrefs if href.strip()]


def mapped(field: str, value: Any, license_id: str | None) -> list[Piece]:
    """A value the adapter read with its source's own table; ``license_id`` None when the table has no entry."""
    if value is None:
        return []
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return [Piece(field, shown, MAPPED, license=license_id)]


def claim(field: str, value: str, license_id: str, verified: str) -> Piece:
    """A permission or opt-in backed by a record: ``verified`` says which."""
    return Piece(field, value, MAPPED, license=license_id, verified=verified)


def to_json(found: Iterable[Piece]) -> str:
    return json.dumps([p.to_json() for p in found], ensure_ascii=False)


def from_json(text: str | None) -> list[Piece]:
    return [Piece.from_json(item) for item in json.loads(text)] if text else []


def _readings(piece: Piece) -> list[Reading]:
    """What a piece says: none when it says nothing about the license, several when free text
    names several."""
    if piece.kind == COPYRIGHTED:
        return []
    if piece.kind == MAPPED:
        found = licenses.find(piece.license)
        return [Reading(found.id, found.family) if found else UNRECOGNISED]
    if licenses.is_silent(piece.value):
        return []
    reading = licenses.read(piece.value)
    if reading.recognised:
        return [reading]
    if piece.kind == MENTION:
        return list(licenses.scan(piece.value))
    if piece.kind == LINK and not licenses.is_license_host(piece.value):
        return []
    return [UNRECOGNISED]


def _weighed(found: Sequence[Piece]) -> list[tuple[Piece, Reading]]:
    return [(p, r) for p in found for r in _readings(p)]


def primary(found: Sequence[Piece]) -> dict[str, Any]:
    """Record columns for the evidence: the piece the license column shows, and every piece.

    The license fields speak first; a category or a link only when there are none. This is
    what ingest shows (attribution lines); the verdict is ``decide``'s.
    """
    speaking = _weighed(found)
    statements = [(p, r) for p, r in speaking if p.kind in (STATEMENT, MAPPED)] or speaking
    shown = next(((p, r) for p, r in statements if r.id), statements[0] if statements else None)
    return {
        "license": shown[1].id if shown else None,
        "license_field": shown[0].field if shown else None,
        "license_value": shown[0].value if shown else None,
        "license_evidence": to_json(found),
    }


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str  # "" when allowed, else a ``records`` reason code
    detail: str
    license: str | None
    piece: Piece | None  # the piece the license was read from


def decide(found: Sequence[Piece], policy: Policy) -> Verdict:
    weighed = _weighed(found)
    read = [(p, r) for p, r in weighed if r.recognised]
    claims = [(p, r) for p, r in read if r.family in CLAIM_FAMILIES]
    backed = [(p, r) for p, r in claims if p.verified]
    if backed:
        return _backed(backed[0], read, policy)
    if claims:
        p, r = claims[0]
        return Verdict(False, "permission_unverified",
                       f"{p.quoted()} claims {r.family} but no {_record_needed(r.family)} backs it", r.id, p)
    if not read:
        shown = next((p for p, _ in weighed), None)
        what = f"{shown.quoted()} is not a license we recognise" if shown else "no license evidence"
        return Verdict(False, "license_unknown", what, None, shown)
    conflict = _conflict(found, read, policy)
    if conflict:
        return Verdict(False, "license_conflict", f"{conflict}: {_every_piece(found)}", read[0][1].id, read[0][0])
    return _agreed(weighed, read, policy)


def _record_needed(family: str) -> str:
    return "active consent in the contributions store" if family == "opt-in" else "valid permission file"


def _backed(backing: tuple[Piece, Reading], read: list[tuple[Piece, Reading]], policy: Policy) -> Verdict:
    """A verified permission or consent decides; what the record's own fields say is only noted."""
    piece, reading = backing
    allowed, reason, text = policy.decide(reading.id)
    others = [p.quoted() for p, _ in read if p is not piece]
    note = f"; superseded: {'; '.join(others)}" if others else ""
    return Verdict(allowed, reason, f"{text} ({piece.verified}){note}", reading.id, piece)


def _conflict(found: Sequence[Piece], read: list[tuple[Piece, Reading]], policy: Policy) -> str | None:
    families = list(dict.fromkeys(r.family for _, r in read))
    if len(families) > 1:
        return f"evidence names licenses of {len(families)} families ({', '.join(families)})"
    verdicts = {policy.decide(r.id)[0] for _, r in read if r.id}
    if len(verdicts) > 1:
        return f"policy {policy.name} admits some of the licenses named and refuses others"
    status = licenses.copyright_status(families[0])
    for piece in found:
        said = piece.value.strip().lower() if piece.kind == COPYRIGHTED else None
        if status is not None and ((said in _TRUE and not status) or (said in _FALSE and status)):
            return f"{piece.quoted()} contradicts family {families[0]}"
    return None


def _agreed(weighed: list[tuple[Piece, Reading]], read: list[tuple[Piece, Reading]], policy: Policy) -> Verdict:
    piece, reading = next(((p, r) for p, r in read if r.id), read[0])
    evidence = f" (from {piece.quoted()})"
    if reading.id is None:
        if policy.refuses_family(reading.family):
            return Verdict(False, "license_not_allowed",
                           f"family {reading.family} is not allowed by policy {policy.name}{evidence}", None, piece)
        return Verdict(False, "license_unknown", f"names family {reading.family} but no version{evidence}", None, piece)
    allowed, reason, text = policy.decide(reading.id)
    if not allowed:
        return Verdict(False, reason, text + evidence, reading.id, piece)
    unread = [p.quoted() for p, r in weighed if not r.recognised]
    if unread:
        return Verdict(False, "license_unknown", f"{text}{evidence}, but {'; '.join(unread)} is not a license "
                                                 f"we recognise", reading.id, piece)
    return Verdict(True, "", text + evidence, reading.id, piece)


def _every_piece(found: Sequence[Piece]) -> str:
    def shown(piece: Piece) -> str:
        if piece.kind == COPYRIGHTED:
            return f"{piece.quoted()} (copyrighted flag)"
        readings = _readings(piece)
        if not readings:
            return f"{piece.quoted()} (says nothing)"
        said = ", ".join(f"{r.id or 'no version'} ({r.family})" if r.recognised else "not recognised"
                         for r in readings)
        return f"{piece.quoted()} -> {said}"

    return "; ".join(shown(p) for p in found)


def row_pieces(row: dict[str, Any]) -> list[Piece]:
    """A row's evidence; rows made before evidence lists (and hand-made test rows) have one piece."""
    if row.get("license_evidence"):
        return from_json(row["license_evidence"])
    value = row.get("license_value") or row.get("license")
    if value is None:
        return []
    kind = MAPPED if row.get("license") else STATEMENT
    return [Piece(row.get("license_field") or "license", value, kind, license=row.get("license"))]


def apply_policy(table: pa.Table, policy: Policy) -> pa.Table:
    """Stage: the verdict for every pending row; terminal rows keep their status.

    ``license_url`` is filled from the registry wherever it is null and the id is known, so
    the manifest links every license it names.
    """
    rows = table.to_pylist()
    for row in rows:
        if row["status"] == records.PENDING:
            _apply(row, decide(row_pieces(row), policy))
        if row["license_url"] is None and row["license"]:
            row["license_url"] = _url_of(row["license"])
    return records.conform(pa.Table.from_pylist(rows, schema=table.schema))


def _apply(row: dict[str, Any], verdict: Verdict) -> None:
    row["license"] = verdict.license
    if verdict.piece is not None:
        row["license_field"], row["license_value"] = verdict.piece.field, verdict.piece.value
    if not verdict.allowed:
        # The adapter's note (e.g. a museum's copyright line) stays after the policy's reason.
        note = f"; {row['detail']}" if row["detail"] else ""
        records.finish(row, records.REJECTED, verdict.reason, verdict.detail + note)


def _url_of(license_id: str) -> str | None:
    found = licenses.find(license_id)
    return found.url if found else None
