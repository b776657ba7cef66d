"""The Met adapter on real Collection API objects (tests/fixtures/sources/metropolitan-museum-of-art)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from curate import records
from curate.sources import load_adapter, met

FIXTURE = Path(__file__).parents[1] / "fixtures" / "sources" / "metropolitan-museum-of-art" / "objects.jsonl"


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return list(met.read(FIXTURE, "met", {}))


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {row["source_id"]: row for row in rows}


def test_one_row_per_image_with_stable_unique_keys(rows, objects):
    assert load_adapter("met") is met.read
    expected = {f"{o['objectID']}/0": o["primaryImage"] for o in objects}
    expected |= {f"{o['objectID']}/{n}": url for o in objects for n, url in enumerate(o["additionalImages"], 1)}
    assert len(rows) == len(expected) == 54  # 12 primary + 42 additional images
    assert {r["source_id"]: r["url"] for r in rows} == expected
    assert all(r["status"] == records.PENDING for r in rows)
    assert len({r["key"] for r in rows}) == len(rows)
    again = list(met.read(FIXTURE, "met", {}))
    assert [r["key"] for r in again] == [r["key"] for r in rows]
    records.to_table(rows)


@pytest.mark.parametrize("off", [False, "false"])
def test_additional_images_can_be_turned_off(objects, off):
    got = list(met.read(FIXTURE, "met", {"additional_images": off}))
    assert [r["source_id"] for r in got] == [f"{o['objectID']}/0" for o in objects]
    kept_keys = {r["key"] for r in met.read(FIXTURE, "met", {})}
    assert {r["key"] for r in got} <= kept_keys  # the primary image keeps its key either way
    with pytest.raises(ValueError, match="additional_images"):
        met.read(FIXTURE, "met", {"additional_images": "sometimes"})


def test_license_from_is_public_domain(rows):
    assert {(r["license"], r["license_field"], r["license_value"]) for r in rows} == {
        ("CC0-1.0", "isPublicDomain", "true")}


def test_descriptive_fields(rows, objects):
    got = by_id(rows)
    for obj in objects:
        row = got[f"{obj['objectID']}/0"]
        assert row["page_url"] == obj["objectURL"]
        assert row["title"] == obj["title"]
        assert row["date"] == (obj["objectDate"] or None)
    assert got["10476/2"]["creator"] == "William Merritt Chase"
    assert got["10476/2"]["origin"] == f"{FIXTURE}:4"
    assert got["36699/0"]["creator"] == "Utagawa Kunisada"  # only in constituents
    assert got["776/0"]["creator"] is None  # no artist at all: "" is not a name
    meta = json.loads(got["776/0"]["meta"])
    assert meta == {**meta, "medium": "Porcelain", "classification": "Ceramics", "culture": "Chinese",
                    "objectName": "Bowl", "department": "The American Wing", "tags": "Fish; Flowers"}
    assert "period" not in meta  # empty strings are left out


def test_later_api_shapes(write_jsonl, objects):
    record = copy.deepcopy(objects[0])
    record.update(objectID="776", isPublicDomain="True",
                  tags=[{"term": "Fish", "AAT_URL": "http://vocab.getty.edu/page/aat/300266083"}])
    [row] = met.read(write_jsonl(record), "met", {})
    assert row["source_id"] == "776/0"
    assert (row["license"], row["license_value"]) == ("CC0-1.0", "True")
    assert json.loads(row["meta"])["tags"] == "Fish"


def test_not_public_domain(write_jsonl, objects):
    no_image = {**objects[0], "objectID": 1, "isPublicDomain": False, "primaryImage": "", "primaryImageSmall": "",
                "additionalImages": []}
    with_image = {**objects[0], "objectID": 2, "isPublicDomain": False,
                  "rightsAndReproduction": "© Artists Rights Society (ARS), New York"}
    got = list(met.read(write_jsonl(no_image, with_image), "met", {}))
    assert [(r["source_id"], r["reason"], r["license"]) for r in got] == [
        ("1", "no_image", "all-rights-reserved"), ("2/0", "", "all-rights-reserved")]
    assert "isPublicDomain=false" in got[0]["detail"]
    assert got[1]["license_value"] == "false"
    assert got[1]["detail"] == "© Artists Rights Society (ARS), New York"


def test_bad_lines_become_reasoned_rows_without_stopping_the_file(write_jsonl, objects):
    good = objects[3]  # 10476: primary + 2 additional images
    path = write_jsonl(
        "not json",
        "42",
        {k: v for k, v in good.items() if k != "objectID"},
        {**good, "objectID": None},
        {**good, "objectID": 1, "additionalImages": "https://images.metmuseum.org/x.jpg"},
        {**good, "objectID": 2, "primaryImage": 17},
        {**good, "objectID": 3, "additionalImages": ["", None]},
        good,
    )
    got = list(met.read(path, "met", {}))
    assert [(r["source_id"], r["reason"]) for r in got] == [
        (None, "malformed_record"),
        (None, "malformed_record"),
        (None, "missing_id"),
        (None, "missing_id"),
        ("1", "malformed_record"),
        ("2", "malformed_record"),
        ("3/0", ""),
        ("3/1", "missing_url"),
        ("3/2", "missing_url"),
        ("10476/0", ""),
        ("10476/1", ""),
        ("10476/2", ""),
    ]
    assert got[0]["raw"] == "not json" and got[0]["detail"].startswith(f"{path}:1: invalid JSON")
    assert "record is a number" in got[1]["detail"]
    assert "additionalImages is a string" in got[4]["detail"] and got[4]["detail"].startswith(f"{path}:5:")
    assert "primaryImage is a number" in got[5]["detail"]
    assert "additionalImages[1]" in got[8]["detail"]
    assert len({r["key"] for r in got}) == len(got)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="objects.jsonl"):
        list(met.read(tmp_path / "objects.jsonl", "met", {}))
