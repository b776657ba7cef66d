"""Wikimedia Commons adapter on real API page objects (tests/fixtures/sources/wikimedia-commons)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable

import pytest

from curate import records
from curate.sources import commons, load_adapter

FIXTURE = Path(__file__).parents[1] / "fixtures" / "sources" / "wikimedia-commons" / "pages.jsonl"
EXT = "imageinfo[0].extmetadata"


@pytest.fixture(scope="module")
def pages() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    return {row["source_id"]: row for row in commons.read(FIXTURE, "commons", {})}


@pytest.fixture
def read_pages(write_jsonl) -> Callable[..., list[dict]]:
    return lambda *lines: list(commons.read(write_jsonl(*lines, name="pages.jsonl"), "commons", {}))


def page_with(page: dict, **ext_values: object) -> dict:
    """A copy of a real page with extmetadata values replaced (None removes the entry)."""
    page = copy.deepcopy(page)
    ext = page["imageinfo"][0]["extmetadata"]
    for name, value in ext_values.items():
        if value is None:
            ext.pop(name, None)
        else:
            ext[name] = {"value": value, "source": "commons-desc-page"}
    return page


def test_one_pending_row_per_page_with_stable_keys(rows):
    assert len(rows) == 12
    assert all(row["status"] == records.PENDING for row in rows.values())
    assert len({row["key"] for row in rows.values()}) == 12
    assert rows["21214211"]["key"] == records.make_key("commons", "21214211")
    assert records.to_table(rows.values()).num_rows == 12
    assert load_adapter("commons") is commons.read


@pytest.mark.parametrize("pageid, license, field, value", [
    ("21214211", "CC-BY-SA-3.0-ES", "License", "cc-by-sa-3.0-es"),
    ("44666587", "public-domain", "License", "pd"),
    ("44669852", "public-domain", "License", "pd"),
    ("44672233", "CC-BY-SA-4.0", "License", "cc-by-sa-4.0"),
    ("44672250", "CC-BY-4.0", "License", "cc-by-4.0"),
    ("44672277", "CC0-1.0", "License", "cc0"),
])
def test_license_and_its_evidence(rows, pageid, license, field, value):
    row = rows[pageid]
    assert (row["license"], row["license_field"], row["license_value"]) == (license, f"{EXT}.{field}.value", value)


def test_license_url_only_where_the_page_gives_one(rows):
    assert rows["44672277"]["license_url"] == "http://creativecommons.org/publicdomain/zero/1.0/deed.en"
    assert rows["21214211"]["license_url"] == "https://creativecommons.org/licenses/by-sa/3.0/es/deed.en"
    assert rows["44666587"]["license_url"] is None  # Public domain pages have no LicenseUrl


@pytest.mark.parametrize("values, license, field", [
    # "No restrictions" files have no License entry: the short name decides.
    ({"License": None, "LicenseShortName": "No restrictions", "UsageTerms": "No known copyright restrictions"},
     "no-known-copyright", "LicenseShortName"),
    ({"License": "cc-by-sa-3.0-de", "LicenseShortName": "CC BY-SA 3.0 de"}, "CC-BY-SA-3.0-DE", "License"),
    ({"License": None, "LicenseShortName": "CC0"}, "CC0-1.0", "LicenseShortName"),
    ({"License": None, "LicenseShortName": "Own license",
      "LicenseUrl": "https://creativecommons.org/publicdomain/zero/1.0/"}, "CC0-1.0", "LicenseUrl"),
    ({"License": None, "LicenseShortName": None, "LicenseUrl": None,
      "UsageTerms": "Creative Commons Zero, Public Domain Dedication"}, "CC0-1.0", "UsageTerms"),
])
def test_license_spellings_found_in_later_fields(read_pages, pages, values, license, field):
    [row] = read_pages(page_with(pages[9], **values))  # pages[9]: a CC0 page
    assert (row["license"], row["license_field"]) == (license, f"{EXT}.{field}.value")


def test_unrecognised_license_stays_unknown_but_keeps_its_evidence(read_pages, pages):
    page = page_with(pages[0], License=None, LicenseShortName="Some custom terms", LicenseUrl=None, UsageTerms=None)
    [row] = read_pages(page)
    assert row["status"] == records.PENDING  # the policy stage rejects it, not the adapter
    assert row["license"] is None
    assert (row["license_field"], row["license_value"]) == (f"{EXT}.LicenseShortName.value", "Some custom terms")
    [row] = read_pages(page_with(pages[0], License=None, LicenseShortName=None, LicenseUrl=None,
                                           UsageTerms=None))
    assert (row["license"], row["license_field"], row["license_value"]) == (None, None, None)


def test_urls(rows):
    row = rows["21214211"]
    assert row["url"] == "https://upload.wikimedia.org/wikipedia/commons/e/e2/TorreFerrer.jpg"
    assert row["page_url"] == "https://commons.wikimedia.org/wiki/File:TorreFerrer.jpg"
    assert row["origin"] == f"{FIXTURE}:1"


def test_creator_title_and_date_are_plain_text(rows):
    assert rows["21214211"]["creator"] == "Dulceld69"
    assert rows["44666587"]["creator"] == "Alfred Brehm"
    # "Cropped image, uploaded by AxelHH": an upload log names the uploader, not the maker.
    assert rows["44672255"]["creator"] is None
    assert json.loads(rows["44672255"]["meta"])["artist"] == "Ausschnittsbild, hochgeladen von AxelHH"
    assert rows["44669852"]["creator"].startswith("Bell, Thomas; Darwin, Charles")
    assert rows["44672277"]["creator"] is None  # no Artist
    assert rows["44672279"]["creator"] is None  # Artist is a "lacking author information" cleanup box
    assert rows["44672276"]["title"] == "Smålenenes amt nr 150: Kart over Hölen, 1871"
    assert rows["21214211"]["date"] == "2012-09-08 21:09:00"
    assert rows["44666587"]["date"] is None  # empty DateTimeOriginal
    for row in rows.values():
        for value in (row["creator"], row["title"], row["date"], row["meta"]):
            assert "<" not in (value or "") and "&amp;" not in (value or "")


def test_meta_for_captions_and_attribution(rows):
    meta = json.loads(rows["44672250"]["meta"])
    assert meta["description"] == ("Prague-Troja, Czech Republic. Prague Zoo. "
                                   "Footbridge over Pod Hrachovkou street and Africa House.")
    assert meta["categories"][0] == "Africký dům (Prague Zoo)"
    assert "Pages with maps" in meta["categories"]
    assert meta["credit"] == "Self-photographed"
    assert meta["attribution"] == "ŠJů, Wikimedia Commons"
    assert (meta["copyrighted"], meta["attribution_required"]) == ("True", "true")
    assert (meta["source_width"], meta["source_height"], meta["file_type"]) == (5037, 3652, "jpg")
    assert rows["21214211"]["original_width"] is None  # the record's size columns are for the fetched original
    assert "description" not in json.loads(rows["44672276"]["meta"])  # no ImageDescription
    assert json.loads(rows["44672277"]["meta"])["file_type"] == "jpeg"


def test_title_falls_back_to_the_file_name(read_pages, pages):
    [row] = read_pages(page_with(pages[0], ObjectName=None))
    assert row["title"] == "TorreFerrer"


def test_multilingual_values_keep_their_languages(read_pages, pages):
    page = page_with(
        pages[0],
        ImageDescription={"es": "Torre <b>Ferrer</b>", "en": "Ferrer tower", "_type": "lang"},
        ObjectName={"es": "Torre Ferrer", "en": "Ferrer Tower", "_type": "lang"},
        UsageTerms={"en": "Creative Commons Attribution-Share Alike 3.0 es", "_type": "lang"},
    )
    [row] = read_pages(page)
    assert json.loads(row["meta"])["description"] == {"es": "Torre Ferrer", "en": "Ferrer tower"}
    assert row["title"] == "Ferrer Tower"
    html = ('<div class="description mw-content-ltr en" lang="en"><span class="language en" title="English">'
            '<b>English:</b></span> A tower</div><div class="description de" lang="de">'
            '<span class="language de"><b>Deutsch:</b></span> Ein Turm</div>')
    [row] = read_pages(page_with(pages[0], ImageDescription=html))
    assert json.loads(row["meta"])["description"] == {"en": "A tower", "de": "Ein Turm"}


def test_whole_api_response_per_line_or_as_the_file(tmp_path, read_pages, pages, rows):
    response = {"batchcomplete": "", "continue": {"gaicontinue": "x", "continue": "gaicontinue||"},
                "query": {"pages": {str(p["pageid"]): p for p in pages}}}
    from_line = read_pages(response)
    assert [r["key"] for r in from_line] == [rows[str(p["pageid"])]["key"] for p in pages]
    assert from_line[0]["origin"] == f"{tmp_path / 'pages.jsonl'}:1#21214211"
    pretty = tmp_path / "response.json"
    pretty.write_text(json.dumps(response, indent=2), encoding="utf-8")
    from_file = list(commons.read(pretty, "commons", {}))
    assert [r["key"] for r in from_file] == [r["key"] for r in from_line]
    assert all(r["status"] == records.PENDING for r in from_file)


def test_malformed_pages_become_reasoned_rows_without_stopping_the_file(tmp_path, read_pages, pages):
    no_url = copy.deepcopy(pages[1])
    del no_url["imageinfo"][0]["url"]
    no_id = {k: v for k, v in pages[2].items() if k != "pageid"}
    bad_type = dict(pages[3], pageid=[1])
    no_info = {k: v for k, v in pages[4].items() if k != "imageinfo"}
    video = copy.deepcopy(pages[5])
    video["imageinfo"][0]["url"] = "https://upload.wikimedia.org/wikipedia/commons/a/ab/Clip.webm"
    rows = read_pages('{"pageid": 1, "imageinfo": [', no_url, no_id, bad_type, no_info, '"a string"',
                      video, pages[6])
    assert [(r["reason"], r["source_id"]) for r in rows] == [
        ("malformed_record", None),
        ("missing_url", "44666587"),
        ("missing_id", None),
        ("malformed_record", None),
        ("no_image", "44672248"),
        ("malformed_record", None),
        ("not_image", "44672250"),
        ("", "44672255"),
    ]
    assert rows[0]["raw"] == '{"pageid": 1, "imageinfo": ['
    assert rows[0]["detail"].startswith(f"{tmp_path / 'pages.jsonl'}:1: invalid JSON")
    assert "imageinfo[0].url" in rows[1]["detail"] and json.loads(rows[1]["raw"])["pageid"] == 44666587
    assert len({r["key"] for r in rows}) == len(rows)


@pytest.mark.parametrize("extra, reason", [
    ({"mediatype": "BITMAP"}, ""),
    ({"mediatype": "VIDEO"}, "not_image"),
    ({"pagecount": 3}, ""),  # a multi-page TIFF is still an image
])
def test_media_type_decides_still_images(read_pages, pages, extra, reason):
    [row] = read_pages(dict(pages[0], **extra))
    assert row["reason"] == reason


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        list(commons.read(tmp_path / "nowhere.jsonl", "commons", {}))
