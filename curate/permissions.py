"""Permission files: a rights holder's written permission, kept under ``licenses/permissions/``.

``permission-granted`` is the one license nobody can claim in a record's own fields: a
source's "Used with permission" is an assertion, not a permission. A manifest names the
files (``permissions: [acme-2026]``) that cover some or all of its records; ingest adds a
verified piece of evidence to each covered record, and ``curate.verdict`` admits the
record on it. A file that has expired, or whose scope leaves out training, still names
the records it covers, so they are rejected ``permission_unverified`` with the reason.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from curate import verdict
from curate.licenses import LICENSES_DIR, LicenseFileError, read_yaml

PERMISSIONS_DIR = LICENSES_DIR / "permissions"
LICENSE = "permission-granted"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Coverage(_Strict):
    source: str  # the manifest's source name
    description: str  # what is covered, in the grantor's terms
    all_records: bool = False
    source_ids: list[str] = []

    @model_validator(mode="after")
    def _one_way(self) -> Coverage:
        if self.all_records == bool(self.source_ids):
            raise ValueError("give either all_records: true or a list of source_ids")
        return self


class Permission(_Strict):
    id: str
    grantor: str  # who holds the rights and gave the permission
    covers: Coverage
    scope: list[Literal["training", "model_release", "redistribution"]] = Field(min_length=1)
    date: datetime.date  # when it was given
    expires: datetime.date | None = None
    evidence: str  # a link to (or path of) the signed permission


@dataclass(frozen=True)
class OnFile:
    """A loaded permission file, with its covered ids in a set for constant-time lookup."""

    path: str
    permission: Permission
    ids: frozenset[str]

    def piece(self, source_id: str | None, today: datetime.date) -> verdict.Piece | None:
        """The evidence for a record this file covers; None when it does not cover it."""
        p = self.permission
        if not (p.covers.all_records or source_id in self.ids):
            return None
        value = f"{p.id}: {p.grantor}, {p.date.isoformat()}, {p.evidence}"
        problem = _problem(p, today)
        if problem:
            return verdict.Piece(f"permission {self.path}", f"{value} ({problem})", verdict.MAPPED, license=LICENSE)
        return verdict.claim(f"permission {self.path}", value, LICENSE,
                             f"permission file {self.path}, granted by {p.grantor} on {p.date.isoformat()}")


def _problem(permission: Permission, today: datetime.date) -> str | None:
    if "training" not in permission.scope:
        return f"its scope ({', '.join(permission.scope)}) does not include training"
    if permission.expires is not None and permission.expires < today:
        return f"it expired on {permission.expires.isoformat()}"
    return None


def path_of(reference: str, base: Path) -> Path:
    """A bare name (``acme-2026``) means ``licenses/permissions/acme-2026.yaml``; else a path from ``base``."""
    if "/" not in reference and not reference.endswith((".yaml", ".yml")):
        return PERMISSIONS_DIR / f"{reference}.yaml"
    return (base / reference).resolve()


def load(path: str | Path, source: str) -> OnFile:
    """A permission file for ``source``; errors name the file and the field."""
    permission = read_yaml(Path(path), Permission)
    if permission.covers.source != source:
        raise LicenseFileError(f"{path}: covers.source is {permission.covers.source!r}, but the manifest naming "
                               f"it is for source {source!r}")
    return OnFile(str(path), permission, frozenset(permission.covers.source_ids))
