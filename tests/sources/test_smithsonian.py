"""Smithsonian Open Access adapter on real EDAN rows (tests/fixtures/sources/smithsonian-open-access)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from curate import records
from curate.sources import load_adapter, smithsonian

FIXTURE = Path(__file__).parents[1] / "fixtures" / "sources" / "smithsonian-open-access" / "records.jsonl"
MEDIA = "content.descriptiveNonRepeating.online_media.media"


@pytest.fixture(scope="module")
def source_rows() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return list(smithsonian.read(FIXTURE, "smithsonian", {}))


def media_of(row: dict) -> list[dict]:
    return row["content"]["descriptiveNonRepeating"].get("online_media", {}).get("media", [])


def resource(item: dict, label: str) -> str:
    return next(r["url"] for r in item["resources"] if r["label"].startswith(label))


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {row["source_id"]: row for row in rows}


def test_one_row_per_media_item_and_one_per_metadata_only_record(rows, source_rows):
    assert load_adapter("smithsonian") is smithsonian.read
    images = {f"{r['id']}/{m['idsId']}": m for r in source_rows for m in media_of(r)}
    without = [r["id"] for r in source_rows if not media_of(r)]
    assert (len(images), len(without)) == (12, 5)
    pending = [r for r in rows if r["status"] == records.PENDING]
    assert sorted(r["source_id"] for r in pending) == sorted(images)
    assert [(r["source_id"], r["reason"]) for r in rows if r["status"] != records.PENDING] == [
        (row_id, "no_image") for row_id in without]
    assert len({r["key"] for r in rows}) == len(rows) == 17
    records.to_table(rows)


def test_license_is_each_media_items_own(rows):
    pending = [r for r in rows if r["status"] == records.PENDING]
    assert {(r["license"], r["license_value"]) for r in pending} == {("CC0-1.0", "CC0")}
    second = by_id(rows)["edanmdm-chndm_1952-76-4-a_c/CHSDM-94E2EA72F2242-000001"]
    assert second["license_field"] == f"{MEDIA}[1].usage.access"
    no_media = by_id(rows)["edanmdm-nmah_1465431"]
    assert no_media["license"] is None  # the metadata's CC0 says nothing about an image


@pytest.mark.parametrize("rendition, label", [("screen", "Screen Image"), ("high-resolution", "High-resolution JPEG"),
                                              ("content", None)])
def test_rendition_option(source_rows, rendition, label):
    got = by_id(smithsonian.read(FIXTURE, "smithsonian", {"rendition": rendition}))
    for row in source_rows:
        for item in media_of(row):
            expected = resource(item, label) if label else item["content"]
            assert got[f"{row['id']}/{item['idsId']}"]["url"] == expected


def test_unknown_rendition_is_a_clear_error():
    with pytest.raises(ValueError, match="rendition"):
        smithsonian.read(FIXTURE, "smithsonian", {"rendition": "poster"})


def test_descriptive_fields(rows):
    mask = by_id(rows)["edanmdm-chndm_1952-76-2/CHSDM-9BFC7BDCAAE92-000001"]
    assert (mask["title"], mask["date"], mask["creator"]) == ("mask", "possibly 19th century", None)
    assert mask["page_url"] == "https://collection.cooperhewitt.org/view/objects/asitem/id/106442"
    meta = json.loads(mask["meta"])
    assert meta["unit"] == "CHNDM"
    assert meta["object_type"] == "Masks (costume); Decorative arts"
    assert meta["physical_description"] == "Medium: wood, carved and painted"
    specimen = by_id(rows)["edanmdm-nmnhbotany_12977748/ark:/65665/m39a031947392e411eb26cb0cd567a67e4"]
    # A specimen has no maker: the collector stands in, never the region or elevation beside it.
    assert specimen["creator"] == "John T. Howell"
    assert specimen["date"] == "14 Jun 1952"
    assert "Collector: John T. Howell" in json.loads(specimen["meta"])["names"]
    assert by_id(rows)["edanmdm-nmah_1465431"]["page_url"] is None  # no record_link in this row


def test_creator_roles(write_jsonl, source_rows):
    row = copy.deepcopy(source_rows[0])
    row["content"]["freetext"]["name"] = [{"label": "Donor", "content": "A. Giver"},
                                          {"label": "Manufacturer", "content": "Acme Co."},
                                          {"label": "Artist", "content": "Jane Maker"},
                                          {"label": "Collector", "content": "C. Ollector"}]
    only_donor = copy.deepcopy(source_rows[0])
    only_donor["id"] = "edanmdm-chndm_other"
    only_donor["content"]["freetext"]["name"] = [{"label": "Donor", "content": "A. Giver"}]
    got = list(smithsonian.read(write_jsonl(row, only_donor), "smithsonian", {}))
    assert [r["creator"] for r in got] == ["Acme Co.; Jane Maker", None]


def test_media_that_are_not_still_images_and_their_licenses(write_jsonl, source_rows):
    row = copy.deepcopy(source_rows[3])  # CHNDM, two Images items
    first, second = media_of(row)
    book = {"type": "Scanned books", "content": "https://doi.org/10.5962/bhl.title.1", "usage": {"access": "CC0"}}
    model = {"type": "3d_voyager", "content": "https://3d-api.si.edu/voyager/3d_package:x", "idsId": "3d-x"}
    no_resources = {k: v for k, v in second.items() if k != "resources"}
    restricted = {**first, "idsId": "NMAH-restricted", "usage": {"access": "Usage conditions apply"}}
    no_url = {"type": "Images", "idsId": "NMAH-no-url", "usage": {"access": "CC0"}}
    row["content"]["descriptiveNonRepeating"]["online_media"]["media"] = [
        book, model, no_resources, restricted, no_url, "not an item"]
    path = write_jsonl(row)
    got = list(smithsonian.read(path, "smithsonian", {}))
    row_id = row["id"]
    assert [(r["source_id"], r["reason"]) for r in got] == [
        (f"{row_id}/0", "not_image"),
        (f"{row_id}/3d-x", "not_image"),
        (f"{row_id}/{second['idsId']}", ""),
        (f"{row_id}/NMAH-restricted", ""),
        (f"{row_id}/NMAH-no-url", "missing_url"),
        (f"{row_id}/5", "malformed_record"),
    ]
    assert got[0]["detail"] == f"{path}:1: online_media.media[0].type is 'Scanned books', not 'Images'"
    assert got[2]["url"] == second["content"]  # no labelled renditions: the delivery URL
    assert (got[3]["license"], got[3]["license_value"]) == (None, "Usage conditions apply")  # policy: unknown
    assert got[3]["license_field"] == f"{MEDIA}[3].usage.access"


def test_bad_lines_become_reasoned_rows_without_stopping_the_file(write_jsonl, source_rows):
    good = source_rows[0]
    dnr = good["content"]["descriptiveNonRepeating"]
    path = write_jsonl(
        "{broken",
        {k: v for k, v in good.items() if k != "id"},
        {**good, "id": "x-1", "content": "none"},
        {**good, "id": "x-2", "content": {**good["content"],
                                         "descriptiveNonRepeating": {**dnr, "online_media": "CC0"}}},
        {**good, "id": "x-3", "content": {**good["content"],
                                         "descriptiveNonRepeating": {**dnr, "online_media": {"media": {}}}}},
        {**good, "id": "x-4", "content": {**good["content"],
                                         "descriptiveNonRepeating": {**dnr, "online_media": {"mediaCount": 0,
                                                                                             "media": []}}}},
        good,
    )
    got = list(smithsonian.read(path, "smithsonian", {}))
    assert [(r["source_id"], r["reason"]) for r in got] == [
        (None, "malformed_record"),
        (None, "missing_id"),
        ("x-1", "malformed_record"),
        ("x-2", "malformed_record"),
        ("x-3", "malformed_record"),
        ("x-4", "no_image"),
        ("edanmdm-chndm_1952-76-2/CHSDM-9BFC7BDCAAE92-000001", ""),
    ]
    for line, row in enumerate(got[:-1], start=1):
        assert row["detail"].startswith(f"{path}:{line}: ")
    assert "online_media is a string" in got[3]["detail"]
    assert "online_media.media is an object" in got[4]["detail"]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="records.jsonl"):
        list(smithsonian.read(tmp_path / "records.jsonl", "smithsonian", {}))
