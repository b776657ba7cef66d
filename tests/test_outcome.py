"""A run that produced nothing usable ends non-zero, naming its top reasons and the likely cause."""

from __future__ import annotations

import yaml

from curate.cli import main
from curate.outcome import looks_like, top_reasons

MET_CSV = ("Object Number,Is Highlight,Is Timeline Work,Is Public Domain,Object ID,Gallery Number,Department\n"
           "1979.486.1,False,False,False,1,,The American Wing\n"
           "1980.264.5,False,False,False,2,,The American Wing\n")


def test_the_mets_published_csv_fails_the_run_and_says_why(tmp_path, capsys):
    (tmp_path / "MetObjects.csv").write_text(MET_CSV)
    pipeline = tmp_path / "pipeline.yaml"
    source = {"manifest": "met", "metadata": [str(tmp_path / "MetObjects.csv")]}
    pipeline.write_text(yaml.safe_dump({"name": "met-csv", "ray": {"num_cpus": 2}, "sources": [source]}))
    assert main(["curate", "run", str(pipeline), "--out", str(tmp_path / "out")]) == 1
    errors = capsys.readouterr().err
    assert "the run kept no record of 3; top reasons: rejected:malformed_record 3" in errors
    assert ("every record of source met (3) is malformed: the met adapter reads The Metropolitan Museum of Art: "
            "Collection API object records, one JSON object per line; this input looks like CSV") in errors
    assert (tmp_path / "out" / "DONE").exists()  # the run itself is finished: its manifest says what happened


def test_what_an_input_looks_like_and_the_top_reasons():
    assert looks_like("<!DOCTYPE html><html>").startswith("this input looks like HTML or XML")
    assert looks_like('{"objectID": "x"}').startswith("this input is JSON, but not in the shape")
    assert top_reasons({"kept": 5, "rejected:min_side": 2, "failed:download_timeout": 9, "rejected:nsfw": 1},
                       count=2) == "failed:download_timeout 9, rejected:min_side 2"
