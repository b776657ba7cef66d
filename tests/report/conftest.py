"""Run folders for the report tests: a small run built in the test (no Ray) with licenses that require
attribution and opt-in contributors, and the session's demo run (``demo_out``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from optin.conftest import contributor, picture
from optin.runs import build_run, museum_rows, optin_rows

from curate.optin import submit
from curate.optin.options import SourceOptions
from curate.optin.store import Store

BY = "CC-BY-4.0"


@pytest.fixture
def credited_run(tmp_path: Path) -> dict:
    return make_run(tmp_path)


def make_run(tmp_path: Path, first_title: str | None = None) -> dict:
    """Six museum records, every other one CC BY 4.0; Ann (asked for credit) and Bob (did not) contributed.

    shard-00000: museum 0 (BY), 1 (CC0), 2 (BY), Ann's first image
    shard-00001: museum 3 (CC0), Bob's image, Ann's second image
    museum 4 (BY) is rejected and museum 5 (CC0) a duplicate: neither is a sample. ``first_title`` replaces
    museum 0's title, which is also its caption and attribution line.
    """
    store = Store(tmp_path / "optin", create=True)
    ann = contributor(store, "Ann *Example*", "ann@example.org", credit=True)
    bob = contributor(store, "Bob", "bob@example.org", credit=False)
    for seed, person in ((1, ann), (2, ann), (3, bob)):
        submit.submit_bytes(store, person.contributor_id, picture(seed), SourceOptions(), title=f"Photo {seed}")
    museum, museum_images = museum_rows(6)
    if first_title is not None:
        museum[0]["title"] = first_title
    for row in museum[::2]:
        row.update(license=BY, license_url="https://creativecommons.org/licenses/by/4.0/",
                   page_url=f"https://museum.example/objects/{row['source_id']}")
    optin, optin_images = optin_rows(store)
    ann_consent = store.active_consent(ann.contributor_id).consent_id
    ann_keys = [r["key"] for r in optin if r["consent_id"] == ann_consent]
    bob_keys = [r["key"] for r in optin if r["consent_id"] != ann_consent]
    m = [r["key"] for r in museum]
    layout = {"shard-00000": [m[0], m[1], m[2], ann_keys[0]], "shard-00001": [m[3], bob_keys[0], ann_keys[1]]}
    out = tmp_path / "run"
    build_run(out, store, layout, museum + optin, {**museum_images, **optin_images}, duplicates=[m[5]])
    return {"out": out, "museum": museum, "by_kept": {m[0], m[2]}, "by_rejected": m[4], "store": store,
            "ann": ann, "ann_keys": ann_keys}
