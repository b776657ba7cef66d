from __future__ import annotations

import yaml

from curate import describe
from curate.optin.revoke import revoke
from curate.report import credits, dataset_card, page, thumbs
from curate import report
from curate.optin.store import Store
from curate.runfolder import RunFolder


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_front_matter_and_counts_come_from_the_run(credited_run):
    folder = RunFolder.at(credited_run["out"])
    text = dataset_card.write(folder).read_text()
    meta = front_matter(text)
    assert meta["license"] == ["cc-by-4.0", "cc0-1.0", "other"]  # CC BY, CC0 and opt-in (no Hub id)
    assert meta["task_categories"] == ["text-to-image"] and meta["size_categories"] == ["n<1K"]
    samples, records = folder.query("SELECT (SELECT count(*) FROM samples), (SELECT count(*) FROM records)")[0]
    assert f"{samples} image-text pairs" in text and f"{records} candidate records" in text
    assert "| The Metropolitan Museum of Art (`met`) | 6 | 4 | `CC-BY-4.0` 2, `CC0-1.0` 2 |" in text
    for line in describe.pipeline_lines(folder.config()):
        assert line in text
    assert "- 3 samples from opt-in contributors" in text and "2 contributors, of whom 1 asked to be credited" in text
    assert "2 samples carry a license that requires attribution" in text
    assert "1 `duplicate:exact_sha256`" in text  # what dedup removed, from stats.json


def test_a_revocation_takes_the_contributor_out_of_every_report(credited_run):
    out, ann_keys = credited_run["out"], credited_run["ann_keys"]
    report.write(out)
    thumb_dir = out / report.FOLDER
    assert all((thumb_dir / thumbs.name(key)).is_file() for key in ann_keys)  # both kept, both shown

    revoke(credited_run["store"], credited_run["ann"].contributor_id, {"channel": "test"}, [out])

    assert not any((thumb_dir / thumbs.name(key)).exists() for key in ann_keys)
    assert "Ann" not in (out / credits.MARKDOWN).read_text()
    card = (out / dataset_card.CARD).read_text()
    assert "## Revocations" in card and "| 2 | 2 |" in card  # records revoked, samples removed
    assert "rejected:revoked" in (thumb_dir / page.INDEX).read_text()


def test_a_run_that_kept_nothing_still_gets_every_report(tmp_path):
    from optin.runs import build_run, museum_rows

    museum, images = museum_rows(2)
    out = tmp_path / "run"
    build_run(out, Store(tmp_path / "optin", create=True), {}, museum, images)  # both rejected:min_side
    paths = report.write(out)
    card = paths["dataset_card"].read_text()
    assert front_matter(card)["license"] == ["other"] and "0 image-text pairs" in card
    assert "- The run kept no sample." in card
    assert "rejected:min_side" in paths["report"].read_text()
    assert "0 samples whose license requires attribution" in paths["credits_md"].read_text()
