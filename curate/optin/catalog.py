"""The consent registry as catalog tables, for a run's DuckDB catalog.

``catalog_tables(store)`` copies the store's tables (``optin_contributors``,
``optin_consents``, ``optin_submissions``, ``optin_revocations``, ``optin_audit``);
``run_tables(out)`` gives those of every opt-in store a finished run read (from
``OUT/run.yaml``) plus ``optin_run_revocations``, the revocations applied to the run.
Contacts appear only as their keyed hash and sign-in token hashes not at all; a
contributor's display name only while one of their consents includes credit and is not
revoked. Once a contributor revoked, what showed their consent (the user agent and address
hash of the page visit, a consent file's statement) stays in the store, for the operator,
and is left out of every catalog: the consent's ``evidence`` is null, their audit entries
lose their ``evidence`` field, and a revocation's evidence keeps only how it reached us
(``channel``, and the operator's ``statement``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import yaml

from curate.runfolder import RunFolder
from curate.optin.options import ADAPTER
from curate.optin.store import REGISTRY, Store

log = logging.getLogger("cleanroom.optin.catalog")

_TABLES = {
    "optin_contributors": """
        SELECT k.contributor_id,
               CASE WHEN EXISTS (SELECT 1 FROM consents c WHERE c.contributor_id = k.contributor_id
                                 AND c.scope_credit = 1 AND c.revoked_at IS NULL) THEN k.display_name
               END AS display_name,
               k.contact_hash, k.channel, k.created_at
        FROM contributors k ORDER BY k.contributor_id""",
    "optin_consents": """
        SELECT consent_id, contributor_id, text_version, text_sha256, scope_training, scope_model_release,
               scope_credit, accepted_at, CASE WHEN revoked_at IS NULL THEN evidence END AS evidence, revoked_at
        FROM consents ORDER BY consent_id""",
    "optin_submissions": """
        SELECT submission_id, contributor_id, consent_id, sha256, media_type, width, height, caption, title,
               submitted_at, status
        FROM submissions ORDER BY submission_id""",
    "optin_revocations": "SELECT * FROM revocations ORDER BY revocation_id",
}
# Typed even when a table is empty, so a catalog query on a new store still finds the columns.
_SCHEMAS = {
    "optin_contributors": pa.schema([("contributor_id", pa.string()), ("display_name", pa.string()),
                                     ("contact_hash", pa.string()), ("channel", pa.string()),
                                     ("created_at", pa.string())]),
    "optin_consents": pa.schema([("consent_id", pa.string()), ("contributor_id", pa.string()),
                                 ("text_version", pa.string()), ("text_sha256", pa.string()),
                                 ("scope_training", pa.bool_()), ("scope_model_release", pa.bool_()),
                                 ("scope_credit", pa.bool_()), ("accepted_at", pa.string()),
                                 ("evidence", pa.string()), ("revoked_at", pa.string())]),
    "optin_submissions": pa.schema([("submission_id", pa.string()), ("contributor_id", pa.string()),
                                    ("consent_id", pa.string()), ("sha256", pa.string()),
                                    ("media_type", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                                    ("caption", pa.string()), ("title", pa.string()),
                                    ("submitted_at", pa.string()), ("status", pa.string())]),
    "optin_revocations": pa.schema([("revocation_id", pa.string()), ("contributor_id", pa.string()),
                                    ("revoked_at", pa.string()), ("evidence", pa.string())]),
}
_AUDIT = pa.schema([("time", pa.string()), ("event", pa.string()), ("contributor_id", pa.string()),
                    ("entry", pa.string())])
_RUN_REVOCATIONS = pa.schema([("applied_at", pa.string()), ("revocation_ids", pa.list_(pa.string())),
                              ("records_revoked", pa.int64()), ("samples_removed", pa.int64()),
                              ("shards_rewritten", pa.list_(pa.string())), ("shards_removed", pa.list_(pa.string()))])


def _typed(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """SQLite has no booleans: its 0/1 become the schema's bools."""
    flags = {f.name for f in schema if f.type == pa.bool_()}
    return pa.Table.from_pylist([{k: bool(v) if k in flags else v for k, v in row.items()} for row in rows],
                                schema=schema)


_REVOCATION_EVIDENCE = ("channel", "statement")


def catalog_tables(store: Store) -> dict[str, pa.Table]:
    rows = {name: store.rows(sql) for name, sql in _TABLES.items()}
    for row in rows["optin_revocations"]:
        evidence = json.loads(row["evidence"])
        row["evidence"] = json.dumps({k: evidence[k] for k in _REVOCATION_EVIDENCE if k in evidence}, sort_keys=True)
    tables = {name: _typed(rows[name], _SCHEMAS[name]) for name in _TABLES}
    revoked = {r.contributor_id for r in store.revocations()}
    entries = [_without_evidence(e) if e.get("contributor_id") in revoked else e for e in store.audit_entries()]
    tables["optin_audit"] = pa.Table.from_pylist(
        [{"time": e["time"], "event": e["event"], "contributor_id": e.get("contributor_id"),
          "entry": json.dumps(e, sort_keys=True, ensure_ascii=False)} for e in entries],
        schema=_AUDIT)
    return tables


def _without_evidence(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "evidence"}


def run_tables(out: Path) -> dict[str, pa.Table]:
    """The opt-in tables of a run's catalog; none when the run read no opt-in source (or is a
    folder without ``run.yaml``) and had no revocation applied.

    Several opt-in stores in one pipeline are stacked table by table.
    """
    folder = RunFolder.at(out)
    # Read as plain YAML: only the sources matter, and a run of an older schema still has them.
    config = yaml.safe_load(folder.run_yaml.read_text()) if folder.run_yaml.exists() else {"sources": []}
    stores = [Path(m) for s in config["sources"] if s["adapter"] == ADAPTER for m in s["metadata"]]
    applied = folder.revocation_log()
    if not stores and not applied:
        return {}
    missing = [p for p in stores if not (p / REGISTRY).is_file()]
    for path in missing:  # a run folder copied away from its store: the tables stay with the store
        log.warning("run %s: opt-in store %s is not here; its registry tables are left out", out, path)
    per_store = [catalog_tables(Store(path, read_only=True)) for path in stores if path not in missing]
    tables = {name: pa.concat_tables([t[name] for t in per_store]) if per_store else _empty(name)
              for name in (*_TABLES, "optin_audit")}
    tables["optin_run_revocations"] = pa.Table.from_pylist(
        [{name: entry[name] for name in _RUN_REVOCATIONS.names} for entry in applied], schema=_RUN_REVOCATIONS)
    return tables


def _empty(name: str) -> pa.Table:
    return (_SCHEMAS.get(name) or _AUDIT).empty_table()
