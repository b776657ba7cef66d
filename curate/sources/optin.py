"""Opt-in contributions: the submissions in a contributions store (``curate.optin.store``).

``path`` is the store folder. One row per submission, in submission id order:

- under an active consent: a candidate with license ``opt-in``, the consent id, license
  evidence naming the consent text version and scope, the contributor's display name as
  creator only when the scope includes credit (never the contact), their title, their
  caption as ``meta.description`` (which the caption stage's templates put into the
  caption, like a museum's description), and the stored clean file as URL;
- revoked: ``rejected:revoked``, with nothing but ids left (the store scrubbed the rest).

Options (``curate.optin.options.SourceOptions``): ``base_url`` is the served URL of the
store's ``files/`` folder, for Ray clusters whose workers do not share the store's disk;
default ``file://`` URLs. The other options configure the intake and are checked here so a
misspelt one fails the run that names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

from curate import records, verdict
from curate.optin import options as optin_options
from curate.optin.consent import Scope, evidence_value
from curate.optin.layout import REVOKED
from curate.optin.store import ACTIVE, FILES, REGISTRY, Store

LICENSE = "opt-in"
LICENSE_FIELD = "consents.text_version+scope"

_QUERY = """
SELECT s.submission_id, s.file, s.caption, s.title, s.status, s.consent_id,
       c.text_version, c.scope_training, c.scope_model_release, c.scope_credit, c.revoked_at,
       k.display_name
FROM submissions s JOIN consents c USING (consent_id) JOIN contributors k ON k.contributor_id = s.contributor_id
ORDER BY s.submission_id
"""


Options = optin_options.SourceOptions


def read(path: Path, source: str, options: dict | Options) -> Iterator[dict]:
    settings = optin_options.parse(options, f"source {source}")
    store = Store(Path(path), read_only=True)
    for row in store.rows(_QUERY):
        origin = f"{Path(path) / REGISTRY}:submissions/{row['submission_id']}"
        if row["status"] != ACTIVE or row["revoked_at"] is not None:
            yield records.rejected(source, row["submission_id"], REVOKED, f"consent {row['consent_id']} revoked",
                                   origin=origin, license=LICENSE, consent_id=row["consent_id"])
            continue
        yield _candidate(source, row, origin, _url(Path(path), row["file"], settings.base_url), Path(path))


def _candidate(source: str, row: dict[str, Any], origin: str, url: str, store_path: Path) -> dict:
    scope = Scope(training=bool(row["scope_training"]), model_release=bool(row["scope_model_release"]),
                  credit=bool(row["scope_credit"]))
    # The store is the only thing that can make a record opt-in: the consent was active when read.
    consent = verdict.claim(LICENSE_FIELD, evidence_value(row["text_version"], scope), LICENSE,
                            f"consent {row['consent_id']} active in {store_path / REGISTRY}")
    return records.candidate(
        source, row["submission_id"], origin=origin, url=url, **verdict.primary([consent]),
        consent_id=row["consent_id"],
        creator=row["display_name"] if scope.credit else None, title=row["title"],
        meta={"description": row["caption"]},
    )


def _url(root: Path, file: str, base_url: str | None) -> str:
    if base_url:
        return f"{base_url.rstrip('/')}/{quote(file)}"
    return (root / FILES / file).resolve().as_uri()
