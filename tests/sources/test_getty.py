"""Getty adapter on Linked Art objects (tests/fixtures/sources/getty): the image's Rights decide the verdict."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from curate import records, verdict
from curate.licenses import Policy
from curate.sources import getty, json_lines, load_adapter

FIXTURE = Path(__file__).parents[1] / "fixtures" / "sources" / "getty" / "objects.jsonl"
IRISES, WHEATSTACKS, STUDIES, PHOTO, CUP, PORTRAIT = (f"7c9a1e30-5c44-4f0e-9d2b-0f2d6a1b3c0{i}" for i in range(1, 7))


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return [value for _, value, error in json_lines(FIXTURE) if not error]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return list(getty.read(FIXTURE, "getty", {}))


def decided(rows: list[dict]) -> dict[str | None, dict]:
    """Rows after the license verdict of the default policy, by source id."""
    return {r["source_id"]: r for r in verdict.apply_policy(records.to_table(rows), Policy.default()).to_pylist()}


def fate(row: dict) -> tuple[str, str]:
    return row["status"], row["reason"]


def test_one_row_per_line_with_stable_keys_and_the_iiif_image(rows):
    assert load_adapter("getty") is getty.read
    assert [r["source_id"] for r in rows] == [IRISES, WHEATSTACKS, STUDIES, PHOTO, CUP, PORTRAIT, None, None]
    assert [r["key"] for r in getty.read(FIXTURE, "getty", {})] == [r["key"] for r in rows]
    records.to_table(rows)  # the rows fit the record schema
    irises = rows[0]
    assert irises["url"] == ("https://media.getty.edu/iiif/image/2b6e0a9c-0001-4c1e-9a55-3d1f0b7e5a11"
                             "/full/!1024,1024/0/default.jpg")
    assert (irises["title"], irises["creator"], irises["date"]) == ("Irises", "Vincent van Gogh", "1889")
    assert irises["page_url"] == "https://www.getty.edu/art/collection/object/103JNH"
    assert irises["origin"] == f"{FIXTURE}:1"
    meta = json.loads(irises["meta"])
    assert meta["accession_number"] == "90.PA.20" and meta["medium"] == "Oil on canvas"
    assert meta["object_type"] == "Painting" and "credit_line" not in meta
    assert rows[2]["creator"] == "Unknown"  # no carried_out_by: the producer name statement


def test_the_size_option_shapes_the_iiif_url():
    [irises, *_] = getty.read(FIXTURE, "getty", {"size": "843,"})
    assert irises["url"].endswith("/full/843,/0/default.jpg")


def test_cc0_rights_on_the_digital_object_the_visual_item_or_the_object_are_kept(rows):
    got = decided(rows)
    for uuid, field in ((IRISES, "digitally_shown_by.subject_to"), (WHEATSTACKS, "representation.subject_to"),
                        (STUDIES, "subject_to")):
        row = got[uuid]
        assert fate(row) == ("pending", "") and row["license"] == "CC0-1.0", uuid
        evidence = verdict.from_json(row["license_evidence"])
        assert verdict.Piece(f"{field}.classified_as (link)", "https://creativecommons.org/publicdomain/zero/1.0/",
                             verdict.LINK) in evidence
        assert verdict.Piece(f"{field}.referred_to_by", "Digital image courtesy of the Getty's Open Content Program.",
                             verdict.MENTION) in evidence


def test_an_in_copyright_right_is_refused_and_no_right_is_never_assumed(rows):
    got = decided(rows)
    photo = got[PHOTO]
    assert fate(photo) == ("rejected", "license_not_allowed") and photo["license"] == "all-rights-reserved"
    assert "rightsstatements.org/vocab/InC/1.0/" in photo["detail"]
    assert fate(got[PORTRAIT]) == ("rejected", "license_unknown")
    assert got[PORTRAIT]["license_evidence"] == "[]"


def test_no_image_and_malformed_records_are_kept_with_a_reason(rows):
    cup, bad_shape, bad_json = rows[4], rows[6], rows[7]
    assert fate(cup) == ("rejected", "no_image") and cup["title"] == "Lidded Cup"
    assert cup["detail"] == f"{FIXTURE}:5: no representation (no image published)"
    assert fate(bad_shape) == ("rejected", "malformed_record")
    assert "representation is a string, expected an array of objects" in bad_shape["detail"]
    assert json.loads(bad_shape["raw"])["_label"] == "A Vase"
    assert fate(bad_json) == ("rejected", "malformed_record")
    assert bad_json["detail"].startswith(f"{FIXTURE}:8: invalid JSON")


def test_ids_types_and_urls_that_cannot_be_used(objects, write_jsonl):
    irises = objects[0]
    person = {**irises, "type": "Person"}
    elsewhere = {**irises, "id": "https://example.org/object/1"}
    no_service = copy.deepcopy(irises)
    del no_service["representation"][0]["digitally_shown_by"][0]["conforms_to"]
    del no_service["representation"][0]["id"]
    jpeg_only = copy.deepcopy(irises)
    del jpeg_only["representation"][0]["digitally_shown_by"]
    got = list(getty.read(write_jsonl(person, elsewhere, no_service, jpeg_only, [irises]), "getty", {}))
    assert [(r["source_id"], r["reason"]) for r in got] == [
        (IRISES, "malformed_record"), (None, "missing_id"), (IRISES, "missing_url"), (IRISES, ""),
        (None, "malformed_record")]
    assert "type is 'Person', expected 'HumanMadeObject'" in got[0]["detail"]
    assert got[3]["url"] == irises["representation"][0]["id"]  # the VisualItem's own JPEG, with no IIIF service
    assert "record is an array" in got[4]["detail"]


def test_one_pretty_printed_object_as_the_api_serves_it(objects, tmp_path):
    path = tmp_path / "object.json"
    path.write_text(json.dumps(objects[0], indent=2), encoding="utf-8")
    [row] = getty.read(path, "getty", {})
    assert (row["source_id"], row["license"]) == (IRISES, "CC0-1.0")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        getty.read(tmp_path / "nope.jsonl", "getty", {})


def test_rights_that_disagree_are_a_conflict_quoting_both(objects, write_jsonl):
    irises = copy.deepcopy(objects[0])
    irises["subject_to"] = objects[3]["representation"][0]["digitally_shown_by"][0]["subject_to"]  # In Copyright
    [row] = decided(list(getty.read(write_jsonl(irises), "getty", {}))).values()
    assert fate(row) == ("rejected", "license_conflict")
    assert "publicdomain/zero/1.0" in row["detail"] and "rightsstatements.org/vocab/InC/1.0/" in row["detail"]
