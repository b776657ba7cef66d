"""Art Institute of Chicago adapter on real dump files (tests/fixtures/sources/art-institute-of-chicago)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate import records
from curate.sources import aic, load_adapter

DUMP = Path(__file__).parents[1] / "fixtures" / "sources" / "art-institute-of-chicago"
ARTWORKS = DUMP / "artworks"
IIIF = "https://www.artic.edu/iiif/2"  # from the dump's config.json


@pytest.fixture(scope="module")
def artworks() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in ARTWORKS.glob("*.json")}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return list(aic.read(ARTWORKS, "aic", {}))


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {row["source_id"]: row for row in rows}


def write(path: Path, value: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=4), encoding="utf-8")
    return path


def test_one_row_per_artwork_with_urls_from_the_dump_config(rows, artworks):
    assert load_adapter("aic") is aic.read
    assert sorted(r["source_id"] for r in rows) == sorted(artworks) == ["11", "16", "19", "4", "9"]
    assert all(r["status"] == records.PENDING for r in rows)
    assert len({r["key"] for r in rows}) == 5
    for artwork_id, artwork in artworks.items():
        row = by_id(rows)[artwork_id]
        assert row["url"] == f"{IIIF}/{artwork['image_id']}/full/843,/0/default.jpg"
        assert row["page_url"] == f"https://www.artic.edu/artworks/{artwork_id}"
        assert row["origin"] == f"{ARTWORKS / artwork_id}.json:1"
    records.to_table(rows)


def test_dump_root_folder_and_single_file_read_alike(rows):
    from_root = list(aic.read(DUMP, "aic", {}))
    assert [(r["key"], r["url"]) for r in from_root] == [(r["key"], r["url"]) for r in rows]
    [single] = aic.read(ARTWORKS / "11.json", "aic", {})
    assert (single["key"], single["url"]) == (by_id(rows)["11"]["key"], by_id(rows)["11"]["url"])


def test_license_from_is_public_domain(rows):
    assert {(r["license"], r["license_field"], r["license_value"]) for r in rows} == {
        ("CC0-1.0", "is_public_domain", "true")}


def test_descriptive_fields(rows):
    got = by_id(rows)
    assert (got["11"]["creator"], got["11"]["title"], got["11"]["date"]) == ("Walter Shirlaw", "Self-Portrait", "1878")
    assert got["19"]["creator"] == "Giovanni Battista Piranesi"
    meta = json.loads(got["16"]["meta"])
    assert meta["medium"] == "Etching with drypoint in black on ivory laid paper"
    assert (meta["classification"], meta["artwork_type"], meta["place_of_origin"]) == ("etching", "Print", "Italy")
    assert meta["description_cc_by"].startswith("<p>Just as the Giants")  # CC BY text, kept under its own key
    assert "description" not in meta
    assert json.loads(got["4"]["meta"])["alt_text"] == "A work made of watercolor over graphite on cream wove paper."


def test_options_alt_images_size_and_iiif_url(rows, artworks):
    with_alts = list(aic.read(ARTWORKS, "aic", {"alt_images": True, "size": "!512,512",
                                                  "iiif_url": "https://iiif.example.org/2/"}))
    alt = artworks["11"]["alt_image_ids"][0]
    assert sorted(r["source_id"] for r in with_alts) == sorted(["11", f"11/{alt}", "16", "19", "4", "9"])
    assert by_id(with_alts)[f"11/{alt}"]["url"] == f"https://iiif.example.org/2/{alt}/full/!512,512/0/default.jpg"
    # The primary image keeps its key whether or not alternates are read.
    assert by_id(with_alts)["11"]["key"] == by_id(rows)["11"]["key"]


def test_api_responses_and_json_lines(tmp_path, artworks):
    art = artworks["4"]
    one = write(tmp_path / "one.json", {"data": art, "info": {"license_text": "..."}})
    listing = write(tmp_path / "list.json", {"data": [artworks["9"], art],
                                              "config": {"iiif_url": "https://api.example.org/iiif/2"}})
    lines = tmp_path / "all.jsonl"
    lines.write_text(json.dumps(art) + "\n" + json.dumps(artworks["9"]) + "\n", encoding="utf-8")
    [from_one] = aic.read(one, "aic", {"iiif_url": IIIF})
    assert (from_one["source_id"], from_one["url"]) == ("4", f"{IIIF}/{art['image_id']}/full/843,/0/default.jpg")
    from_list = list(aic.read(listing, "aic", {}))  # the response's own config names the IIIF server
    assert [r["source_id"] for r in from_list] == ["9", "4"]
    assert from_list[1]["url"].startswith("https://api.example.org/iiif/2/")
    assert from_list[0]["origin"] != from_list[1]["origin"]
    from_lines = list(aic.read(lines, "aic", {"iiif_url": IIIF}))
    assert [(r["source_id"], r["origin"]) for r in from_lines] == [("4", f"{lines}:1"), ("9", f"{lines}:2")]


def test_in_copyright_artwork_keeps_its_notice(tmp_path, artworks):
    notice = "© 2018 Orange County Citizens Foundation / Artists Rights Society (ARS), New York"
    path = write(tmp_path / "artworks" / "10000.json",
                 {**artworks["4"], "id": 10000, "is_public_domain": False, "copyright_notice": notice})
    [row] = aic.read(path, "aic", {"iiif_url": IIIF})
    assert (row["license"], row["license_value"], row["detail"]) == ("all-rights-reserved", "false", notice)


def test_bad_files_become_reasoned_rows_without_stopping_the_folder(tmp_path, artworks):
    folder = tmp_path / "json" / "artworks"
    write(tmp_path / "json" / "config.json", {"iiif_url": IIIF})
    write(folder / "1.json", {k: v for k, v in artworks["4"].items() if k != "id"})
    write(folder / "2.json", {**artworks["4"], "id": 100000, "is_public_domain": False, "image_id": None})
    write(folder / "3.json", {**artworks["4"], "id": 3, "image_id": 12})
    write(folder / "4.json", artworks["4"])
    write(folder / "5.json", ["not", "an", "artwork"])
    (folder / "6.json").write_text("{\n", encoding="utf-8")
    got = list(aic.read(folder, "aic", {}))
    assert [(r["source_id"], r["reason"]) for r in got] == [
        (None, "missing_id"),
        ("100000", "no_image"),
        ("3", "malformed_record"),
        ("4", ""),
        (None, "malformed_record"),
        (None, "malformed_record"),
        (None, "malformed_record"),
        (None, "malformed_record"),
    ]
    assert got[1]["license"] == "all-rights-reserved" and "image_id is null" in got[1]["detail"]
    assert got[2]["detail"] == f"{folder / '3.json'}:1: image_id is a number, expected a string"
    assert got[4]["detail"].startswith(f"{folder / '5.json'}:1#0: record is a string")
    assert got[7]["detail"].startswith(f"{folder / '6.json'}:1: invalid JSON")
    assert len({r["key"] for r in got}) == len(got)


def test_no_iiif_base_is_reported_per_image(tmp_path, artworks):
    path = write(tmp_path / "4.json", artworks["4"])
    [row] = aic.read(path, "aic", {})
    assert (row["source_id"], row["reason"]) == ("4", "missing_url")
    assert "iiif_url" in row["detail"]


def test_broken_config_is_a_clear_error(tmp_path, artworks):
    write(tmp_path / "artworks" / "4.json", artworks["4"])
    (tmp_path / "config.json").write_text('{"website_url": "http://www.artic.edu"}', encoding="utf-8")
    with pytest.raises(ValueError, match="config.json has no iiif_url"):
        aic.read(tmp_path, "aic", {})


def test_missing_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="artworks"):
        aic.read(tmp_path / "artworks", "aic", {})
