"""The consent registry in a run's catalog: tables copied from the store, nothing secret."""

from __future__ import annotations

import duckdb

from curate import catalog
from curate.optin import consent, submit
from curate.optin.catalog import catalog_tables, run_tables
from curate.optin.consent import Scope
from curate.optin.options import SourceOptions
from curate.optin.revoke import revoke

from .conftest import contributor, picture
from .runs import build_run, museum_rows, optin_rows


def test_registry_tables_hold_hashes_not_contacts_and_names_only_with_credit(store):
    ann = contributor(store, "Ann Example", "ann@example.org", credit=True)
    bob = contributor(store, "Bob Private", "bob@example.org", credit=False)
    submit.submit_bytes(store, ann.contributor_id, picture(1), SourceOptions(), caption="A heron")
    tables = catalog_tables(store)
    assert set(tables) == {"optin_contributors", "optin_consents", "optin_submissions", "optin_revocations",
                           "optin_audit"}
    names = {r["contributor_id"]: r["display_name"] for r in tables["optin_contributors"].to_pylist()}
    assert names == {ann.contributor_id: "Ann Example", bob.contributor_id: None}
    every_value = str([t.to_pylist() for t in tables.values()])
    assert "example.org" not in every_value and "token" not in str([t.schema for t in tables.values()])
    assert ann.contact_hash in every_value  # the keyed hash is what the catalog can join on

    store.revoke(ann.contributor_id, {"channel": "test"})
    tables = catalog_tables(store)
    assert {r["display_name"] for r in tables["optin_contributors"].to_pylist()} == {None}
    assert tables["optin_revocations"].num_rows == 1


def test_run_tables_follow_the_run_and_load_into_duckdb(store, tmp_path):
    ann = contributor(store, "Ann Example", "ann@example.org")
    submit.submit_bytes(store, ann.contributor_id, picture(1), SourceOptions())
    museum, museum_images = museum_rows(2)
    optin, optin_images = optin_rows(store)
    out = tmp_path / "run"
    build_run(out, store, {"shard-00000": [r["key"] for r in museum + optin]}, museum + optin,
              {**museum_images, **optin_images})
    revoke(store, ann.contributor_id, {"channel": "test"}, [out])
    tables = run_tables(out)
    con = duckdb.connect()
    for name, table in tables.items():
        con.register(name, table)
    applied = con.execute("SELECT samples_removed, shards_rewritten FROM optin_run_revocations").fetchall()
    assert applied == [(1, ["shard-00000"])]
    assert con.execute("SELECT count(*) FROM optin_consents WHERE revoked_at IS NOT NULL").fetchone() == (1,)
    store.root.rename(tmp_path / "moved")  # the run copied away from its store
    tables = run_tables(out)
    assert tables["optin_consents"].num_rows == 0 and tables["optin_run_revocations"].num_rows == 1
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "run.yaml").write_text("sources: [{source: met, adapter: met, metadata: [x]}]\n")
    assert run_tables(tmp_path / "plain") == {}


def test_the_run_catalog_holds_the_registry_after_a_revocation(store, tmp_path):
    ann = contributor(store, "Ann Example", "ann@example.org")
    submit.submit_bytes(store, ann.contributor_id, picture(1), SourceOptions())
    museum, museum_images = museum_rows(1)
    optin, optin_images = optin_rows(store)
    out = tmp_path / "run"
    build_run(out, store, {"shard-00000": [r["key"] for r in optin + museum]}, museum + optin,
              {**museum_images, **optin_images})
    revoke(store, ann.contributor_id, {"channel": "test"}, [out])
    rows = catalog.query(out, "SELECT r.fate, c.revoked_at IS NOT NULL AS revoked FROM records r "
                              "JOIN optin_consents c USING (consent_id)").to_pylist()
    assert rows == [{"fate": "rejected:revoked", "revoked": True}]
    assert catalog.query(out, "SELECT samples_removed FROM optin_run_revocations").to_pylist() == [
        {"samples_removed": 1}]


def test_after_a_revocation_the_consent_evidence_stays_in_the_store_only(store):
    ann, _ = store.register("Ann", "ann@example.org", "web", with_token=True)
    evidence = {"channel": "web", "user_agent": "Firefox/140 on Ann-laptop", "ip_hash": "f" * 64}
    store.add_consent(ann.contributor_id, consent.current(), Scope(training=True, model_release=False, credit=False),
                      evidence)
    bob = contributor(store, "Bob", "bob@example.org")
    assert "Ann-laptop" in str(catalog_tables(store)["optin_consents"].to_pylist())
    store.revoke(ann.contributor_id, {"channel": "web", "user_agent": "Firefox/140 on Ann-laptop"})
    tables = catalog_tables(store)
    assert "Ann-laptop" not in str([t.to_pylist() for t in tables.values()])
    assert "Ann-laptop" in str(store.audit_entries()) and "Ann-laptop" in store.consents(ann.contributor_id)[0].evidence
    kept = {r["contributor_id"]: r["evidence"] for r in tables["optin_consents"].to_pylist()}
    assert kept[ann.contributor_id] is None and "test" in kept[bob.contributor_id]
