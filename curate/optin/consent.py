"""Consent texts, scopes, and the consent file of a folder submission.

A consent text is a versioned file ``licenses/consent-v<N>.md``; a consent record names
the version and the sha256 of the text the contributor saw, so a later edit of the file
cannot silently change what someone agreed to (a changed text needs a new version).

The scope travels with every record as its license evidence (``consent-v1
scope=training,model_release,credit``), so each shard sample says under which text and
for which uses it was given, without a lookup.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from curate import data
from curate.config import ConfigError, load_yaml, validate
from curate.optin.errors import OptinError

LICENSES_DIR = data.LICENSES
CONSENT_FILE = "consent.yaml"
_VERSION = re.compile(r"^consent-v(\d+)$")
SCOPE_NAMES = ("training", "model_release", "credit")


@dataclass(frozen=True)
class ConsentText:
    version: str  # "consent-v1"
    text: str
    sha256: str


def versions() -> list[str]:
    """Known versions, oldest first."""
    found = [p.stem for p in LICENSES_DIR.glob("consent-v*.md") if _VERSION.match(p.stem)]
    return sorted(found, key=lambda v: int(_VERSION.match(v)[1]))


@lru_cache(maxsize=8)
def load(version: str) -> ConsentText:
    if not _VERSION.match(version):
        raise OptinError(f"consent version {version!r} is not of the form consent-v<N>")
    path = LICENSES_DIR / f"{version}.md"
    if not path.is_file():
        raise OptinError(f"consent version {version!r}: {path} does not exist; known: {', '.join(versions())}")
    data = path.read_bytes()
    return ConsentText(version=version, text=data.decode("utf-8"), sha256=hashlib.sha256(data).hexdigest())


def current() -> ConsentText:
    """The newest text: what the intake page shows."""
    known = versions()
    if not known:
        raise OptinError(f"no consent text in {LICENSES_DIR} (consent-v<N>.md)")
    return load(known[-1])


class Scope(BaseModel):
    """What a contributor allows. Training is the point of contributing, so it is required."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    training: bool
    model_release: bool
    credit: bool

    @field_validator("training")
    @classmethod
    def _training_required(cls, value: bool) -> bool:
        if not value:
            raise ValueError("consent must include training: contributions exist to be trained on")
        return value

    def names(self) -> list[str]:
        return [name for name in SCOPE_NAMES if getattr(self, name)]


def evidence_value(version: str, scope: Scope) -> str:
    """The license evidence string of a record: text version and scope."""
    return f"{version} scope={','.join(scope.names())}"


def parse_evidence(value: str) -> tuple[str, Scope]:
    version, _, names = value.partition(" scope=")
    chosen = set(names.split(",")) if names else set()
    if not _VERSION.match(version) or not chosen <= set(SCOPE_NAMES):
        raise OptinError(f"not an opt-in license evidence value: {value!r}")
    return version, Scope(**{name: name in chosen for name in SCOPE_NAMES})


class ConsentFile(BaseModel):
    """``consent.yaml`` of a folder submission: what the contributor signed, as the operator received it.

    ``contact`` is read here and hashed at once; it is never written anywhere in plain.
    """

    model_config = ConfigDict(extra="forbid")

    consent: str  # the text version the contributor signed, e.g. consent-v1
    accepted: bool
    accepted_on: dt.date
    display_name: str = Field(min_length=1, max_length=80)
    contact: str = Field(min_length=3, max_length=254)
    scope: Scope
    evidence: str = Field(min_length=1)  # how the signed consent reached us (ticket, scanned form, ...)

    @classmethod
    def load(cls, path: Path) -> ConsentFile:
        if not path.is_file():
            raise OptinError(f"{path}: no consent file; a submission folder needs {CONSENT_FILE}")
        try:
            parsed = validate(cls, load_yaml(path), path)
        except ConfigError as e:
            raise OptinError(str(e)) from None
        if not parsed.accepted:
            raise OptinError(f"{path}: accepted: the contributor did not accept {parsed.consent}")
        try:
            load(parsed.consent)  # the version must exist
        except OptinError as e:
            raise OptinError(f"{path}: consent: {e}") from None
        return parsed
