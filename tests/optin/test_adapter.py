"""The opt-in source: store submissions become records like any source's, through the same stages."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from curate import licenses, records, verdict
from curate.config import load_manifest, load_pipeline, resolve_sources
from curate.ingest import Ingest
from curate.optin import submit
from curate.optin.consent import parse_evidence
from curate.optin.errors import OptinError
from curate.optin.layout import REVOKED
from curate.optin.options import SourceOptions
from curate.sources import load_adapter

from .conftest import contributor, picture

MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "optin.yaml"


@pytest.fixture
def contributions(store):
    ann = contributor(store, "Ann Example", "ann@example.org", credit=True, model_release=True)
    bob = contributor(store, "Bob Private", "bob@example.org", credit=False, model_release=False)
    submit.submit_bytes(store, ann.contributor_id, picture(1), SourceOptions(), caption="A heron", title="Heron")
    submit.submit_bytes(store, bob.contributor_id, picture(2), SourceOptions())
    gone = contributor(store, "Cy", "cy@example.org")
    submit.submit_bytes(store, gone.contributor_id, picture(3), SourceOptions(), caption="Cy's dog")
    store.revoke(gone.contributor_id, {"channel": "test"})
    return {"ann": ann, "bob": bob, "gone": gone}


def rows_by_person(store, contributions) -> dict[str, dict]:
    rows = list(load_adapter("optin")(store.root, "optin", {}))
    consent_of = {c.consent_id: name for name, person in contributions.items()
                  for c in store.consents(person.contributor_id)}
    return {consent_of[r["consent_id"]]: r for r in rows}


def test_submissions_become_opt_in_records_with_consent_and_credit_only_if_given(store, contributions):
    rows = rows_by_person(store, contributions)
    ann, bob, gone = rows["ann"], rows["bob"], rows["gone"]
    assert (ann["license"], ann["status"], ann["creator"], ann["title"]) == ("opt-in", "pending", "Ann Example",
                                                                             "Heron")
    assert json.loads(ann["meta"]) == {"description": "A heron"} and ann["caption"] is None  # the caption stage's
    version, scope = parse_evidence(ann["license_value"])
    assert version == "consent-v1" and scope.model_release and scope.credit
    assert Path(ann["url"].removeprefix("file://")).read_bytes()[:3] == b"\xff\xd8\xff"
    assert bob["creator"] is None and not parse_evidence(bob["license_value"])[1].model_release
    assert (gone["status"], gone["reason"], gone["url"], gone["caption"]) == ("rejected", REVOKED, None, None)
    assert licenses.Policy.default().decide(ann["license"])[0]
    text = json.dumps(list(rows.values()))
    assert "example.org" not in text and "Cy" not in text


def test_the_ingest_stage_reads_the_store_through_the_manifest(store, contributions, tmp_path):
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"name: t\nsources:\n  - manifest: {MANIFEST}\n    metadata: [{store.root}]\n")
    sources = resolve_sources(load_pipeline(pipeline), pipeline, {"out": str(tmp_path)})
    assert load_manifest(MANIFEST).adapter == "optin"
    table = pa.concat_tables(Ingest(sources)(pa.table({"source": ["optin"], "path": [str(store.root)]})))
    table = verdict.apply_policy(table, licenses.Policy.default())
    fates = sorted((r["status"], r["reason"], r["attribution"]) for r in table.to_pylist())
    assert fates == [("pending", "", "Heron by Ann Example, Opt-in contributors"),
                     ("pending", "", "Opt-in contributors"),
                     ("rejected", REVOKED, None)]


def test_a_misspelt_option_fails_the_source(store):
    with pytest.raises(OptinError, match="allow_host"):
        list(load_adapter("optin")(store.root, "optin", {"allow_host": ["x"]}))


def test_base_url_serves_the_files_folder(store, contributions):
    rows = list(load_adapter("optin")(store.root, "optin", {"base_url": "http://10.0.0.5:8000/optin/"}))
    served = [r["url"] for r in rows if r["status"] == records.PENDING]
    assert served and all(u.startswith("http://10.0.0.5:8000/optin/") and u.endswith(".jpg") for u in served)
