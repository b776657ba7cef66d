"""Cleveland Museum of Art adapter on real Open Access API records (tests/fixtures/sources/cleveland-museum-of-art)."""

from __future__ import annotations

import copy
import json
import unicodedata
from pathlib import Path

import pytest

from curate import records
from curate.sources import cleveland, load_adapter

FIXTURE = Path(__file__).parents[1] / "fixtures" / "sources" / "cleveland-museum-of-art" / "artworks.jsonl"


@pytest.fixture(scope="module")
def artworks() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return list(cleveland.read(FIXTURE, "cleveland", {}))


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {row["source_id"]: row for row in rows}


def test_one_pending_row_per_artwork_with_stable_keys(rows, artworks):
    assert load_adapter("cleveland") is cleveland.read
    assert [r["source_id"] for r in rows] == [str(a["id"]) for a in artworks]
    assert all(r["status"] == records.PENDING for r in rows)
    assert len({r["key"] for r in rows}) == len(artworks) == 10
    again = list(cleveland.read(FIXTURE, "cleveland", {}))
    assert [r["key"] for r in again] == [r["key"] for r in rows]
    assert rows[0]["origin"] == f"{FIXTURE}:1"
    records.to_table(rows)  # the rows fit the record schema


def test_license_from_share_license_status(rows):
    assert {(r["license"], r["license_field"], r["license_value"]) for r in rows} == {
        ("CC0-1.0", "share_license_status", "CC0")}


def test_descriptive_fields(rows, artworks):
    got = by_id(rows)
    for artwork in artworks:
        row = got[str(artwork["id"])]
        assert row["url"] == artwork["images"]["web"]["url"]
        assert row["page_url"] == artwork["url"]
        assert row["title"] == artwork["title"]
        assert row["date"] == artwork["creation_date"]
    assert got["93014"]["creator"] == "Thomas Cole (American, 1801-1848)"
    assert got["140427"]["creator"] == "Jean de Clichy (French); Gauthier du Four (French); Guillaume Boey (French)"
    assert got["106841"]["creator"] is None  # creators: []


def test_meta_for_captions(rows):
    meta = json.loads(by_id(rows)["93014"]["meta"])
    assert meta["type"] == "Painting"
    assert meta["technique"] == "oil on canvas"
    assert meta["culture"] == "America, 19th century"
    assert meta["department"] == "American Painting and Sculpture"
    assert meta["wall_description"].startswith("Championing the unspoiled American wilderness")
    html = json.loads(by_id(rows)["123168"]["meta"])["wall_description"]
    assert "<" in html  # markup is kept for the captioner to strip
    volume = json.loads(by_id(rows)["140492"]["meta"])
    assert volume["type"] == "Bound Volume" and volume["digital_description"]
    assert "description" not in volume  # null in the record: left out, not stored as null


@pytest.mark.parametrize("rendition", ["web", "print", "full"])
def test_rendition_option(artworks, rendition):
    got = list(cleveland.read(FIXTURE, "cleveland", {"rendition": rendition}))
    assert [r["url"] for r in got] == [a["images"][rendition]["url"] for a in artworks]


def test_missing_rendition_falls_back_to_print_then_web(write_jsonl, artworks):
    only_web = copy.deepcopy(artworks[0])
    del only_web["images"]["full"], only_web["images"]["print"]
    only_print = copy.deepcopy(artworks[1])
    del only_print["images"]["full"], only_print["images"]["web"]
    path = write_jsonl(only_web, only_print)
    got = list(cleveland.read(path, "cleveland", {"rendition": "full"}))
    assert [r["url"] for r in got] == [only_web["images"]["web"]["url"], only_print["images"]["print"]["url"]]


def test_unknown_rendition_is_a_clear_error():
    with pytest.raises(ValueError, match="rendition"):
        cleveland.read(FIXTURE, "cleveland", {"rendition": "huge"})


def test_copyrighted_record_keeps_its_evidence_and_notice(write_jsonl, artworks):
    record = copy.deepcopy(artworks[0])
    record.update(share_license_status="Copyrighted", copyright="© Estate of the Artist")
    other = copy.deepcopy(artworks[1])
    other["share_license_status"] = "other"
    [row, unknown] = cleveland.read(write_jsonl(record, other), "cleveland", {})
    assert (row["license"], row["license_value"], row["detail"]) == (
        "all-rights-reserved", "Copyrighted", "© Estate of the Artist")
    assert (unknown["license"], unknown["license_value"]) == (None, "other")  # left to the policy


def test_text_is_nfc(write_jsonl, artworks):
    record = copy.deepcopy(artworks[0])
    record["title"] = "Saint-Re\u0301my"
    record["creators"][0]["description"] = "Ce\u0301zanne"
    [row] = cleveland.read(write_jsonl(record), "cleveland", {})
    assert row["title"] == "Saint-R\u00e9my" == unicodedata.normalize("NFC", record["title"])
    assert row["creator"] == "C\u00e9zanne"


def test_bad_lines_become_reasoned_rows_without_stopping_the_file(write_jsonl, artworks):
    good = artworks[0]
    no_id = {k: v for k, v in good.items() if k != "id"}
    path = write_jsonl(
        '{"id": 1, "images": ',  # truncated line
        [good],  # not an object
        no_id,
        {**good, "id": 2, "images": "https://example.org/a.jpg"},
        {**good, "id": 3, "images": None},
        {**good, "id": 4, "images": {}},
        {**good, "id": 5, "images": {"web": {"url": ""}, "print": None}},
        good,
    )
    got = list(cleveland.read(path, "cleveland", {}))
    assert [(r["source_id"], r["status"], r["reason"]) for r in got] == [
        (None, "rejected", "malformed_record"),
        (None, "rejected", "malformed_record"),
        (None, "rejected", "missing_id"),
        ("2", "rejected", "malformed_record"),
        ("3", "rejected", "no_image"),
        ("4", "rejected", "no_image"),
        ("5", "rejected", "missing_url"),
        ("93014", "pending", ""),
    ]
    for line, row in enumerate(got, start=1):
        assert row["detail"].startswith(f"{path}:{line}: ") if row["reason"] else row["detail"] is None
    assert got[0]["raw"] == '{"id": 1, "images": '
    assert json.loads(got[2]["raw"])["title"] == good["title"]
    assert "images is a string" in got[3]["detail"]
    assert got[4]["title"] == good["title"]  # rejections still say what was dropped
    assert len({r["key"] for r in got}) == len(got)


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        list(cleveland.read(missing, "cleveland", {}))
