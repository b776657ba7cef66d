"""Walters adapter on collection API objects (tests/fixtures/sources/walters): the published terms, loans excepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate import records, verdict
from curate.licenses import Policy
from curate.sources import json_lines, load_adapter, walters

FIXTURE = Path(__file__).parents[1] / "fixtures" / "sources" / "walters" / "objects.jsonl"
CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
TERMS = {"terms": CC0}


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return [value for _, value, error in json_lines(FIXTURE) if not error]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return list(walters.read(FIXTURE, "walters", TERMS))


def decided(rows: list[dict]) -> dict[str | None, dict]:
    return {r["source_id"]: r for r in verdict.apply_policy(records.to_table(rows), Policy.default()).to_pylist()}


def test_one_row_per_line_with_stable_keys(rows):
    assert load_adapter("walters") is walters.read
    assert [r["source_id"] for r in rows] == ["1", "2", "37626", "7363", "37211", "54321", None, "23074", None]
    assert [r["key"] for r in walters.read(FIXTURE, "walters", TERMS)] == [r["key"] for r in rows]
    records.to_table(rows)


def test_api_objects_and_dump_objects_give_their_primary_raw_image(rows):
    by_id = {r["source_id"]: r for r in rows}
    city = by_id["37626"]
    assert city["url"] == "http://static.thewalters.org/images/PS1_37.677_Fnt_DD_T10.jpg"
    assert (city["title"], city["creator"], city["date"]) == ("The Ideal City", "Fra Carnevale", "ca. 1480-1484")
    assert city["page_url"] == "http://art.thewalters.org/detail/37626"
    leaf = by_id["2"]  # the dump's shape: Images[], Creators[], DateText
    assert leaf["url"] == "http://static.thewalters.org/images/CPS_W.569.4a_Fp_DD.jpg"
    assert (leaf["creator"], leaf["date"]) == ("Iranian", "11th century AH/AD 17th century")
    meta = json.loads(leaf["meta"])
    assert meta["ObjectNumber"] == "W.569.4A" and meta["Medium"].startswith("ink and pigments")


def test_the_primary_image_comes_first_in_the_dump_shape(objects, write_jsonl):
    leaf = objects[1]
    detail = {"ID": 1, "ImageURLs": {"Raw": "http://static.thewalters.org/images/detail.jpg"}, "IsPrimary": False,
              "Rank": 1}
    primary = {**leaf["Images"][0], "Rank": 2}
    [row] = walters.read(write_jsonl({**leaf, "Images": [detail, primary]}), "walters", TERMS)
    assert row["url"] == primary["ImageURLs"]["Raw"]


def test_the_terms_decide_and_a_loan_is_refused(rows):
    got = decided(rows)
    for object_id in ("2", "37626", "7363", "37211", "23074"):
        row = got[object_id]
        assert (row["status"], row["license"]) == ("pending", "CC0-1.0"), object_id
        assert verdict.Piece(walters.TERMS_FIELD, CC0) in verdict.from_json(row["license_evidence"])
    loan = got["1"]
    assert (loan["status"], loan["reason"], loan["license"]) == ("rejected", "license_not_allowed",
                                                                 "all-rights-reserved")
    assert loan["detail"].endswith("; Loaned by the Directors of The Austen-Stokes Ancient Americas Foundation")
    assert verdict.from_json(loan["license_evidence"]) == [verdict.Piece(
        "CreditLine", "Loaned by the Directors of The Austen-Stokes Ancient Americas Foundation", verdict.MAPPED,
        license="all-rights-reserved")]


def test_without_terms_nothing_is_assumed():
    got = decided(list(walters.read(FIXTURE, "walters", {})))
    assert {(r["status"], r["reason"]) for k, r in got.items() if k not in ("1", "54321", None)} == {
        ("rejected", "license_unknown")}


def test_a_credit_line_that_names_a_license_is_weighed_with_the_terms(objects, write_jsonl):
    restricted = {**objects[2], "CreditLine": "Photograph © All rights reserved"}
    [row] = decided(list(walters.read(write_jsonl(restricted), "walters", TERMS))).values()
    assert (row["status"], row["reason"]) == ("rejected", "license_conflict")


def test_no_image_and_malformed_records_are_kept_with_a_reason(rows):
    coin, bad_shape, bad_json = rows[5], rows[6], rows[8]
    assert (coin["status"], coin["reason"]) == ("rejected", "no_image") and coin["title"] == "Tetradrachm of Alexander"
    assert coin["detail"] == f"{FIXTURE}:6: no PrimaryImage.Raw and no primary Images entry"
    assert bad_shape["reason"] == "malformed_record" and "PrimaryImage is a string" in bad_shape["detail"]
    assert json.loads(bad_shape["raw"])["Title"] == "Amphora"
    assert bad_json["reason"] == "malformed_record" and bad_json["detail"].startswith(f"{FIXTURE}:9: invalid JSON")


def test_an_object_without_an_id(objects, write_jsonl):
    [row] = walters.read(write_jsonl({**objects[2], "ObjectID": True}), "walters", TERMS)
    assert (row["source_id"], row["reason"]) == (None, "missing_id") and "ObjectID=True" in row["detail"]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        walters.read(tmp_path / "nope.jsonl", "walters", TERMS)
