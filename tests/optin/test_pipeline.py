"""End to end on local Ray: the demo corpus plus an opt-in store through every stage, then a
revocation against the finished run."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from curate import catalog
from curate.optin import submit
from curate.optin.layout import REVOKED
from curate.optin.options import SourceOptions
from curate.optin.revoke import revoke

from .conftest import contributor, picture
from .runs import members

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_opt_in_submissions_run_through_the_pipeline_and_revocation_cleans_the_run(store, tmp_path):
    ann = contributor(store, "Ann Example", "ann@example.org", credit=True)
    bob = contributor(store, "Bob", "bob@example.org", credit=False)
    for seed in (1, 2, 3):
        submit.submit_bytes(store, ann.contributor_id, picture(seed, 320, 256), SourceOptions(),
                            caption=f"Ann's garden {seed}")
    submit.submit_bytes(store, bob.contributor_id, picture(4, 320, 256), SourceOptions())
    submit.submit_bytes(store, bob.contributor_id, picture(5, 64, 64), SourceOptions())  # too small: min_side
    demo = yaml.safe_load((ROOT / "pipelines" / "demo.yaml").read_text())
    demo["sources"].append({"manifest": "optin", "metadata": [str(store.root)]})
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump(demo))
    out = tmp_path / "out"

    from curate.run import run

    run(pipeline, out)
    optin = [r for r in pq.read_table(out / "records").to_pylist() if r["source"] == "optin"]
    assert sorted((r["status"], r["reason"]) for r in optin) == [("kept", "")] * 4 + [("rejected", "min_side")]
    kept = {r["key"]: r for r in optin if r["status"] == "kept"}
    samples = members(out / "shards")
    for key, row in kept.items():
        meta = json.loads(samples[key]["json"])
        assert meta["license"] == "opt-in" and meta["consent_id"] == row["consent_id"]
    ann_consent = store.active_consent(ann.contributor_id).consent_id
    ann_keys = {k for k, r in kept.items() if r["consent_id"] == ann_consent}
    assert len(ann_keys) == 3
    assert {samples[k]["txt"].decode() for k in ann_keys} == {f"Ann's garden {i}, by Ann Example" for i in (1, 2, 3)}

    before = members(out / "shards")
    _, (result,) = revoke(store, ann.contributor_id, {"channel": "test"}, [out])
    after = members(out / "shards")
    assert after == {k: v for k, v in before.items() if k not in ann_keys}
    assert result.samples_removed == 3
    assert catalog.query(out, f"SELECT count(*) n FROM records WHERE reason = '{REVOKED}'").to_pylist() == [{"n": 3}]
