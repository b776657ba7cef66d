"""Flickr adapter on SYNTHETIC photos (no real photo records may be copied) and the real license table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate import records
from curate.sources import flickr

FIXTURES = Path(__file__).parents[1] / "fixtures" / "sources" / "flickr"
PHOTOS = FIXTURES / "photos.jsonl"
STATIC = "https://live.staticflickr.com/65535"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return list(flickr.read(PHOTOS, "flickr", {}))


@pytest.fixture(scope="module")
def by_id(rows) -> dict[str, dict]:
    return {r["source_id"]: r for r in rows if r["status"] == records.PENDING}


def test_packaged_table_is_the_real_one_and_maps_every_id():
    assert flickr.DEFAULT_LICENSES.read_bytes() == (FIXTURES / "licenses.json").read_bytes()
    table = flickr.license_table(flickr.DEFAULT_LICENSES)
    assert {key: entry.license for key, entry in table.items()} == {
        "0": "all-rights-reserved", "1": "CC-BY-NC-SA-2.0", "2": "CC-BY-NC-2.0", "3": "CC-BY-NC-ND-2.0",
        "4": "CC-BY-2.0", "5": "CC-BY-SA-2.0", "6": "CC-BY-ND-2.0", "7": "no-known-copyright",
        "8": "us-government-work", "9": "CC0-1.0", "10": "PDM-1.0",
    }
    assert table["0"].url is None and table["9"].url == "https://creativecommons.org/publicdomain/zero/1.0/"


def test_one_row_per_photo_in_responses_and_single_lines(rows, by_id):
    assert len(rows) == 16
    assert len(by_id) == 10
    assert len({r["key"] for r in rows}) == 16
    assert records.to_table(rows).num_rows == 16
    assert rows[0]["origin"] == f"{PHOTOS}:1#0" and rows[3]["origin"] == f"{PHOTOS}:2"


@pytest.mark.parametrize("photo_id, license, value", [
    ("50000000001", "CC0-1.0", "9"),
    ("50000000002", "PDM-1.0", "10"),
    ("50000000003", "CC-BY-2.0", "4"),
    ("50000000004", "all-rights-reserved", "0"),
    ("50000000005", "no-known-copyright", "7"),
    ("50000000006", "us-government-work", "8"),
    ("50000000007", "CC-BY-NC-SA-2.0", "1"),
    ("50000000008", None, "99"),  # not in the table: unknown, the raw id kept
    ("50000000010", "CC0-1.0", "9"),  # a number in the input, compared as a string
])
def test_license_ids_mapped_through_the_table(by_id, photo_id, license, value):
    row = by_id[photo_id]
    assert (row["license"], row["license_field"], row["license_value"]) == (license, "license", value)


def test_license_url_from_the_table(by_id):
    assert by_id["50000000005"]["license_url"] == "https://www.flickr.com/commons/usage/"
    assert by_id["50000000004"]["license_url"] is None
    missing = by_id["50000000009"]
    assert (missing["license"], missing["license_field"], missing["license_value"]) == (None, None, None)


def test_image_url_by_size_preference_or_built(by_id):
    assert by_id["50000000001"]["url"] == f"{STATIC}/50000000001_a1b2c3d4e5_o.jpg"
    assert by_id["50000000002"]["url"] == f"{STATIC}/50000000002_a1b2c3d4e5.jpg"  # only url_m (and url_s)
    assert by_id["50000000006"]["url"] == f"{STATIC}/50000000006_a1b2c3d4e5_c.jpg"
    assert by_id["50000000005"]["url"] == f"{STATIC}/50000000005_a1b2c3d4e5_b.jpg"  # no url_*: built


def test_sizes_option():
    rows = list(flickr.read(PHOTOS, "flickr", {"sizes": ["url_m", "url_l"]}))
    assert rows[0]["url"] == f"{STATIC}/50000000001_a1b2c3d4e5.jpg"


def test_page_creator_title_date_meta(by_id):
    row = by_id["50000000001"]
    assert row["page_url"] == "https://www.flickr.com/photos/12345678@N00/50000000001"
    assert (row["creator"], row["title"], row["date"]) == ("Example Owner", "Synthetic photo 50000000001",
                                                          "2019-05-04 10:11:12")
    meta = json.loads(row["meta"])
    assert meta == {"description": "A lighthouse & the coast at dusk", "tags": ["lighthouse", "coast"],
                    "source_width": 4000, "source_height": 3000}
    assert by_id["50000000005"]["creator"] == "Example Library Commons"
    assert by_id["50000000008"]["date"] is None  # datetakenunknown: datetaken is only the upload time


def test_malformed_lines_become_reasoned_rows(rows):
    rejected = [(r["reason"], r["source_id"], r["origin"].rsplit(":", 1)[1]) for r in rows
                if r["status"] == records.REJECTED]
    assert rejected == [
        ("malformed_record", None, "9"),
        ("missing_id", None, "10"),
        ("missing_url", "50000000012", "11"),
        ("malformed_record", None, "12"),
        ("not_image", "50000000014", "13"),
        ("malformed_record", None, "14"),
    ]
    assert rows[10]["raw"].startswith('{"id": "50000000011"')
    assert "Invalid API Key" in rows[-1]["detail"]


def test_licenses_path_option(tmp_path):
    table = tmp_path / "licenses.json"
    table.write_text(json.dumps({"licenses": {"license": [
        {"id": "9", "name": "Public Domain Dedication (CC0)", "url": ""},
        {"id": "4", "name": "Some renamed license", "url": ""}]}, "stat": "ok"}), encoding="utf-8")
    rows = {r["source_id"]: r for r in flickr.read(PHOTOS, "flickr", {"licenses_path": str(table)})}
    assert rows["50000000001"]["license"] == "CC0-1.0"
    assert rows["50000000003"]["license"] is None  # the name alone is not recognised
    assert rows["50000000002"]["license"] is None  # id 10 not in this table


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        list(flickr.read(tmp_path / "nowhere.jsonl", "flickr", {}))
