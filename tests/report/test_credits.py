from __future__ import annotations

import pyarrow.parquet as pq

from curate.report import credits
from curate.runfolder import RunFolder


def test_every_attribution_requiring_sample_is_credited_exactly_once(credited_run):
    parquet, md = credits.write(RunFolder.at(credited_run["out"]))
    rows = pq.read_table(parquet).to_pylist()
    samples = [r for r in rows if r["kind"] == credits.SAMPLE]
    assert sorted(r["key"] for r in samples) == sorted(credited_run["by_kept"])
    assert all(r["license"] == "CC-BY-4.0" and r["license_url"].startswith("https://creativecommons.org/")
               for r in samples)
    text = md.read_text()
    for row in samples:
        assert text.count(row["attribution"]) == 1 and text.count(f"(<{row['link']}>)") == 1
    rejected = next(r for r in credited_run["museum"] if r["key"] == credited_run["by_rejected"])
    assert rejected["title"] not in text


def test_contributors_are_credited_only_when_they_asked(credited_run):
    parquet, md = credits.write(RunFolder.at(credited_run["out"]))
    people = [r for r in pq.read_table(parquet).to_pylist() if r["kind"] == credits.CONTRIBUTOR]
    assert [(p["name"], p["samples"], p["source"]) for p in people] == [("Ann *Example*", 2, "optin")]
    text = md.read_text()
    assert "- Ann \\*Example\\* (2 images)" in text  # a name is text, never Markdown emphasis
    assert "Bob" not in text
    assert text.index("## ") < text.index("Ann")  # grouped under its source's heading
