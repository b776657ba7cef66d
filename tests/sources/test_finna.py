"""Finna adapter on real API search records (tests/fixtures/sources/finna)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from curate import records
from curate.sources import finna

FIXTURE = Path(__file__).parents[1] / "fixtures" / "sources" / "finna" / "records.jsonl"
FIRST_ID = "museovirasto.CC0641BB5337F541CBD19169838BAC1F"


@pytest.fixture(scope="module")
def fixture_records() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return list(finna.read(FIXTURE, "finna", {}))


@pytest.fixture
def read_records(write_jsonl) -> Callable[..., list[dict]]:
    return lambda *lines, **options: list(finna.read(write_jsonl(*lines), "finna", options))


def test_one_row_per_image_with_stable_keys(rows, fixture_records):
    assert len(rows) == 7
    assert [r["source_id"] for r in rows] == [f"{rec['id']}/0" for rec in fixture_records]
    assert all(r["status"] == records.PENDING for r in rows)
    assert len({r["key"] for r in rows}) == 7
    assert records.to_table(rows).num_rows == 7


def test_cc_by_license_from_image_rights(rows):
    # The sample is all CC BY 4.0 (attribution required, not CC0); "CC0" inside ids is just hex.
    assert {(r["license"], r["license_field"], r["license_value"], r["license_url"]) for r in rows} == {
        ("CC-BY-4.0", "imageRights.copyright", "CC BY 4.0", "http://creativecommons.org/licenses/by/4.0/deed.fi")}


def test_urls_title_creator_date(rows):
    row = rows[0]
    assert row["url"] == f"https://api.finna.fi/Cover/Show?id={FIRST_ID}&index=0&size=large"
    assert row["page_url"] == f"https://www.finna.fi/Record/{FIRST_ID}"
    assert row["title"] == "linnunpönttö koivussa"
    assert row["creator"] == "Vikstedt, Topi"
    assert row["date"] == "11.06.1923"  # from the "valmistusaika: ..." subject
    assert rows[1]["date"] == "1931, marraskuu"
    assert rows[6]["date"] == "1960 luku"
    assert rows[3]["creator"] is None and rows[3]["date"] is None


def test_meta_subjects_and_facet_labels(rows):
    meta = json.loads(rows[0]["meta"])
    assert meta["subjects"] == ["koivu", "linnunpöntöt", "Revonristi", "valmistusaika: 11.06.1923"]
    assert meta["formats"] == ["Kuva"]
    assert meta["buildings"] == ["Museovirasto", "Kansatieteen kuvakokoelma"]
    assert meta["authors"] == ["Vikstedt, Topi (piirtäjä)"]


def test_license_link_other_labels_and_missing_rights(read_records, fixture_records):
    base = fixture_records[0]
    link_only = dict(base, id="a.1", imageRights={"link": "https://creativecommons.org/publicdomain/zero/1.0/"})
    pdm = dict(base, id="a.2", imageRights={"copyright": "PDM",
                                            "link": "https://creativecommons.org/publicdomain/mark/1.0/"})
    unknown = dict(base, id="a.3", imageRights={"copyright": "Luvanvarainen käyttö / ei tiedossa"})
    none = {k: v for k, v in base.items() if k != "imageRights"} | {"id": "a.4"}
    rows = read_records(link_only, pdm, unknown, none)
    assert [(r["license"], r["license_field"], r["license_value"]) for r in rows] == [
        ("CC0-1.0", "imageRights.link", "https://creativecommons.org/publicdomain/zero/1.0/"),
        ("PDM-1.0", "imageRights.copyright", "PDM"),
        (None, "imageRights.copyright", "Luvanvarainen käyttö / ei tiedossa"),
        (None, None, None),
    ]
    assert all(r["status"] == records.PENDING for r in rows)  # license decisions belong to the policy stage


def test_several_images_year_presenters_and_base_url(read_records, fixture_records):
    record = dict(fixture_records[0], year="1923", summary=["Linnunpönttö koivun rungossa."],
                  images=["/Cover/Show?id=x&index=0", "/Cover/Show?id=x&index=1"],
                  presenters=[{"name": "Esittäjä, Eero", "role": "esittäjä"}])
    rows = read_records(record, base_url="http://127.0.0.1:9000/")
    assert [r["source_id"] for r in rows] == [f"{FIRST_ID}/0", f"{FIRST_ID}/1"]
    assert [r["url"] for r in rows] == ["http://127.0.0.1:9000/Cover/Show?id=x&index=0",
                                        "http://127.0.0.1:9000/Cover/Show?id=x&index=1"]
    assert rows[0]["date"] == "1923"
    assert rows[0]["creator"] == "Vikstedt, Topi; Esittäjä, Eero"
    assert json.loads(rows[1]["meta"])["summary"] == ["Linnunpönttö koivun rungossa."]


def test_whole_response_per_line_or_as_the_file(tmp_path, read_records, fixture_records, rows):
    response = {"records": fixture_records, "resultCount": 196334, "status": "OK"}
    from_line = read_records(response, {"resultCount": 0, "status": "OK"})
    assert [r["key"] for r in from_line] == [r["key"] for r in rows]
    pretty = tmp_path / "response.json"
    pretty.write_text(json.dumps(response, indent=2, ensure_ascii=False), encoding="utf-8")
    assert [r["key"] for r in finna.read(pretty, "finna", {})] == [r["key"] for r in rows]


def test_malformed_records_become_reasoned_rows_without_stopping_the_file(tmp_path, read_records, fixture_records):
    base = fixture_records[0]
    rows = read_records(
        '{"id": "broken", "images": [',
        {k: v for k, v in base.items() if k != "id"},
        dict(base, id=12345),
        dict(base, id="b.1", images=[]),
        dict(base, id="b.2", images="/Cover/Show?id=b.2"),
        dict(base, id="b.3", images=["/Cover/Show?id=b.3&index=0", "", None]),
        ["not", "a", "record"],
        {"status": "ERROR", "statusMessage": "Invalid search"},
        fixture_records[1],
    )
    assert [(r["reason"], r["source_id"]) for r in rows] == [
        ("malformed_record", None),
        ("missing_id", None),
        ("malformed_record", None),
        ("no_image", "b.1"),
        ("malformed_record", "b.2"),
        ("", "b.3/0"),
        ("missing_url", "b.3/1"),
        ("malformed_record", "b.3/2"),
        ("malformed_record", None),
        ("malformed_record", None),
        ("malformed_record", None),
        ("malformed_record", None),
        ("", f"{fixture_records[1]['id']}/0"),
    ]
    assert rows[0]["raw"] == '{"id": "broken", "images": ['
    assert "images[1]" in rows[6]["detail"] and f"{tmp_path / 'records.jsonl'}:6" in rows[6]["detail"]
    assert len({r["key"] for r in rows}) == len(rows)
