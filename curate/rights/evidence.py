"""Copyright statements an image embeds, weighed by the license verdict with the record's own evidence.

An original may say who holds its rights (XMP ``dc:rights``, the IPTC copyright notice),
link its license (``xmpRights:WebStatement``) or flag itself as copyrighted
(``xmpRights:Marked``). These are only known once fetch has read the original, so this
stage adds them to the record's ``license_evidence`` and asks ``curate.verdict`` again: a
statement that names another license family than the record's, or a copyright the record's
license denies, is a ``license_conflict`` like any other (the verdict's rules, not ours).
Free text that names no license (a photographer's name) says nothing and changes nothing.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curate import records, verdict
from curate.licenses import Policy
from curate.rights.filters import EmbeddedRights, found_rights

# Weighed just before the embedded_rights filter, for it: its rejections count in that filter's stage.
EMBEDDED_STAGE = EmbeddedRights.name

# (where it was found, key) -> the kind of piece the verdict weighs it as
_XMP = (("dc:rights", "rights", verdict.MENTION), ("xmpRights:WebStatement", "web_statement", verdict.LINK),
        ("xmpRights:Marked", "marked", verdict.COPYRIGHTED))


def embedded_pieces(row: dict[str, Any]) -> list[verdict.Piece]:
    found = found_rights(row)
    pieces = [verdict.Piece(f"embedded XMP {name}", value, kind)
              for name, key, kind in _XMP for value in found.get("xmp", {}).get(key, [])]
    notice = found.get("iptc", {}).get("copyright_notice")
    if notice:
        pieces.append(verdict.Piece("embedded IPTC copyright notice", notice, verdict.MENTION))
    return pieces


class EmbeddedEvidence:
    """Stage: pending records whose original embeds rights statements -> the verdict with them as evidence."""

    name = "embedded_license_evidence"

    def __init__(self, policy: Policy):
        self.policy = policy

    def __call__(self, table: pa.Table) -> pa.Table:
        table = records.conform(table)
        if "rights" not in table.column_names:
            return table
        rows = table.to_pylist()
        for row in rows:
            if row["status"] == records.PENDING:
                self._weigh(row)
        return pa.Table.from_pylist(rows, schema=table.schema)

    def _weigh(self, row: dict[str, Any]) -> None:
        embedded = embedded_pieces(row)
        if not embedded:
            return
        every = [*verdict.row_pieces(row), *embedded]
        row["license_evidence"] = verdict.to_json(every)
        decided = verdict.decide(every, self.policy)
        if not decided.allowed:
            records.finish(row, records.REJECTED, decided.reason,
                           f"with the statements the image embeds: {decided.detail}", stage=EMBEDDED_STAGE)
