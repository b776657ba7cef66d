"""National Gallery of Art adapter on hand-written CSVs in the documented layout
(tests/fixtures/sources/national-gallery-of-art; not real records, see its README)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from curate import records
from curate.sources import load_adapter, nga

DATA = Path(__file__).parents[1] / "fixtures" / "sources" / "national-gallery-of-art"
IMAGES = DATA / "published_images.csv"
UUID = "5d8f0a7e-1111-4a2b-9c3d-00000000000{}".format


@pytest.fixture(scope="module")
def images() -> dict[str, dict]:
    with open(IMAGES, encoding="utf-8", newline="") as f:
        return {row["uuid"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return list(nga.read(DATA, "nga", {}))


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {row["source_id"]: row for row in rows}


def test_one_row_per_primary_image(rows):
    assert load_adapter("nga") is nga.read
    assert [(r["source_id"], r["reason"]) for r in rows] == [
        (UUID(1), ""), (UUID(3), ""), (UUID(4), ""), (UUID(5), "malformed_record"), (UUID(6), "missing_url")]
    assert len({r["key"] for r in rows}) == len(rows)
    records.to_table(rows)


def test_all_views_adds_alternates_with_their_own_keys(rows):
    everything = list(nga.read(DATA, "nga", {"views": "all"}))
    assert len(everything) == 6
    alternate = by_id(everything)[UUID(2)]
    assert (alternate["status"], alternate["title"]) == (records.PENDING, "River Landscape, with a View of a Town")
    assert {r["key"] for r in rows} < {r["key"] for r in everything}


def test_license_from_openaccess(rows):
    got = by_id(rows)
    assert (got[UUID(1)]["license"], got[UUID(1)]["license_field"], got[UUID(1)]["license_value"]) == (
        "CC0-1.0", "openaccess", "1")
    assert (got[UUID(3)]["license"], got[UUID(3)]["license_value"]) == ("all-rights-reserved", "0")


def test_iiif_urls(rows, images):
    for row in rows:
        if row["status"] == records.PENDING:
            base = images[row["source_id"]]["iiifurl"].rstrip("/")
            assert row["url"] == f"{base}/full/!1024,1024/0/default.jpg"
    [small] = [r for r in nga.read(DATA, "nga", {"size": "400,"}) if r["source_id"] == UUID(1)]
    assert small["url"] == f"https://api.nga.gov/iiif/{UUID(1)}/full/400,/0/default.jpg"


def test_object_fields_joined_onto_each_image(rows):
    river = by_id(rows)[UUID(1)]
    assert (river["creator"], river["date"]) == ("Jan van Goyen", "c. 1650")
    assert river["page_url"] == "https://www.nga.gov/collection/art-object-page.1001.html"
    meta = json.loads(river["meta"])
    assert (meta["medium"], meta["classification"]) == ("oil on canvas", "Painting")
    assert meta["dimensions"].startswith("overall: 72.9 x 60.3 cm") and "framed: 100.3" in meta["dimensions"]
    assert meta["assistivetext"].startswith("A broad river under a cloudy sky")
    assert by_id(rows)[UUID(3)]["title"] == 'Study for "Composition, No. 4"'
    assert by_id(rows)[UUID(4)]["creator"] == "Charles M\u00e9ryon"  # decomposed in the CSV, NFC here


def test_origins_count_lines_of_multi_line_records(rows):
    # Image 4's assistivetext spans two lines, so image 5 starts on line 7.
    assert [r["origin"].rsplit(":", 1)[1] for r in rows] == ["2", "4", "5", "7", "8"]


def test_missing_object_names_its_id(rows):
    orphan = by_id(rows)[UUID(5)]
    assert "depictstmsobjectid '9999'" in orphan["detail"] and str(DATA / "objects.csv") in orphan["detail"]
    assert orphan["detail"].startswith(f"{IMAGES}:7: ")


@pytest.mark.parametrize("name", ["objects.csv", "published_images.csv"])
def test_either_csv_path_reads_like_the_folder(rows, name):
    assert [r["key"] for r in nga.read(DATA / name, "nga", {})] == [r["key"] for r in rows]


def test_bad_rows_become_reasoned_rows_without_stopping_the_file(tmp_path, images):
    shutil.copy(DATA / "objects.csv", tmp_path)
    path = tmp_path / "published_images.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(images[UUID(1)]), lineterminator="\n")
        writer.writeheader()
        writer.writerow({**images[UUID(1)], "uuid": ""})
        f.write("short-row,https://api.nga.gov/iiif/x,,primary\n")
        writer.writerow({**images[UUID(3)], "assistivetext": "x" * 200_000})  # over the csv field limit
        writer.writerow(images[UUID(1)])
    got = list(nga.read(tmp_path, "nga", {}))
    assert [(r["source_id"], r["reason"]) for r in got] == [
        (None, "missing_id"), ("short-row", "malformed_record"), (None, "malformed_record"), (UUID(1), "")]
    assert got[1]["detail"].startswith(f"{path}:3: 13 columns expected")
    assert got[1]["raw"] == "short-row,https://api.nga.gov/iiif/x,,primary"
    assert got[2]["detail"].startswith(f"{path}:4: unreadable CSV record: field larger than field limit")
    assert got[3]["origin"] == f"{path}:5"


def test_broken_object_row_is_named_in_its_images_rejection(tmp_path):
    shutil.copy(IMAGES, tmp_path)
    objects = (DATA / "objects.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "objects.csv").write_text(objects[0] + "1001,too,few\n", encoding="utf-8")
    river = by_id(nga.read(tmp_path, "nga", {}))[UUID(1)]
    assert river["reason"] == "malformed_record"
    assert f"its row {tmp_path / 'objects.csv'}:2 is malformed" in river["detail"]


def test_setup_errors_are_clear(tmp_path):
    shutil.copy(DATA / "objects.csv", tmp_path)
    with pytest.raises(FileNotFoundError, match="published_images.csv"):
        nga.read(tmp_path, "nga", {})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        nga.read(tmp_path / "nowhere", "nga", {})
    with pytest.raises(ValueError, match="views"):
        nga.read(DATA, "nga", {"views": "alternate"})
