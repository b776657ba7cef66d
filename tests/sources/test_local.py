"""Local folder adapter on folders made in the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate import records
from curate.sources import local


def make_folder(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


IMAGE = b"\x89PNG\r\n\x1a\n"  # the adapter never decodes images


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "images", {
        "a.jpg": IMAGE,
        "a.json": json.dumps({"title": "A bee", "creator": "Ann", "license": "CC BY 4.0", "date": 1931,
                              "description": "A bee on a flower", "tags": ["bee", "flower"]}),
        "birds/Robin Photo.PNG": IMAGE,
        "birds/z.webp": IMAGE,
        "birds/z.webp.json": json.dumps({"license": "Public domain", "source_id": "contrib-0042",
                                         "consent_id": "consent-7"}),
        "c.TIFF": IMAGE,
        "d.gif": IMAGE,
        "d.json": "{not json",
        "metadata.jsonl": "\n".join([
            json.dumps({"file": "birds/Robin Photo.PNG", "license": "cc0", "creator": "Bo",
                        "license_url": "https://creativecommons.org/publicdomain/zero/1.0/"}),
            json.dumps({"file": "a.jpg", "license": "CC BY-SA 4.0", "title": "overridden by the sidecar"}),
            json.dumps({"file": "gone.jpg", "license": "cc0"}),
            "not json at all",
            json.dumps({"file": "notes.txt"}),
            json.dumps({"file": "../outside.jpg"}),
            json.dumps({"file": "birds/Robin Photo.PNG"}),
        ]) + "\n",
        "notes.txt": "not an image",
        "orphan.json": json.dumps({"license": "cc0"}),
        ".hidden/e.jpg": IMAGE,
        "._a.jpg": IMAGE,
    })


def rows_by_id(folder: Path, **options: object) -> dict[str | None, dict]:
    rows = list(local.read(folder, "local", dict(options)))
    assert len({r["key"] for r in rows}) == len(rows)
    assert records.to_table(rows).num_rows == len(rows)
    return {r["source_id"] or r["origin"]: r for r in rows}


def test_one_row_per_image_sorted_with_relative_ids(folder):
    rows = list(local.read(folder, "local", {"license": "CC0-1.0"}))
    images = [r["source_id"] for r in rows if r["status"] == records.PENDING]
    assert images == ["a.jpg", "birds/Robin Photo.PNG", "contrib-0042", "c.TIFF"]
    assert [r["source_id"] for r in list(local.read(folder, "local", {}))] == [r["source_id"] for r in rows]


def test_sidecar_then_metadata_jsonl_then_folder_default(folder):
    rows = rows_by_id(folder, license="CC0-1.0")
    evidence = {sid: (rows[sid]["license"], rows[sid]["license_field"], rows[sid]["license_value"])
                for sid in ("a.jpg", "birds/Robin Photo.PNG", "contrib-0042", "c.TIFF")}
    assert evidence == {
        "a.jpg": ("CC-BY-4.0", "a.json:license", "CC BY 4.0"),  # the sidecar beats metadata.jsonl
        "birds/Robin Photo.PNG": ("CC0-1.0", "metadata.jsonl:license", "cc0"),
        "contrib-0042": ("public-domain", "birds/z.webp.json:license", "Public domain"),
        "c.TIFF": ("CC0-1.0", "manifest:options:license", "CC0-1.0"),
    }
    assert rows["birds/Robin Photo.PNG"]["license_url"] == "https://creativecommons.org/publicdomain/zero/1.0/"


def test_no_license_anywhere_stays_unknown(folder):
    row = rows_by_id(folder)["c.TIFF"]
    assert (row["status"], row["license"], row["license_field"]) == (records.PENDING, None, None)


def test_fields_from_sidecar_and_metadata(folder):
    rows = rows_by_id(folder)
    a = rows["a.jpg"]
    assert (a["title"], a["creator"], a["date"]) == ("A bee", "Ann", "1931")
    assert json.loads(a["meta"]) == {"description": "A bee on a flower", "file": "a.jpg", "tags": ["bee", "flower"]}
    assert rows["birds/Robin Photo.PNG"]["creator"] == "Bo"
    z = rows["contrib-0042"]
    assert z["consent_id"] == "consent-7" and json.loads(z["meta"])["file"] == "birds/z.webp"
    assert z["key"] == records.make_key("local", "contrib-0042")


def test_file_urls_or_served_urls(folder):
    row = rows_by_id(folder)["birds/Robin Photo.PNG"]
    assert row["url"] == (folder / "birds" / "Robin Photo.PNG").resolve().as_uri()
    served = rows_by_id(folder, base_url="http://127.0.0.1:8000/")
    assert served["birds/Robin Photo.PNG"]["url"] == "http://127.0.0.1:8000/birds/Robin%20Photo.PNG"
    assert served["a.jpg"]["url"] == "http://127.0.0.1:8000/a.jpg"


def test_bad_metadata_becomes_reasoned_rows(folder):
    rows = list(local.read(folder, "local", {"license": "CC0-1.0"}))
    rejected = [(r["reason"], r["source_id"], r["detail"]) for r in rows if r["status"] == records.REJECTED]
    jsonl = folder / "metadata.jsonl"
    assert [(reason, sid) for reason, sid, _ in rejected] == [
        ("missing_url", "gone.jpg"),
        ("malformed_record", None),  # not JSON
        ("not_image", "notes.txt"),
        ("malformed_record", None),  # ../outside.jpg
        ("malformed_record", None),  # a second entry for the same file
        ("malformed_record", "d.gif"),  # its sidecar is not JSON
    ]
    assert rejected[0][2].startswith(f"{jsonl}:3:")
    assert "second entry" in rejected[4][2] and f"{jsonl}:1" in rejected[4][2]
    bad_sidecar = next(r for r in rows if r["source_id"] == "d.gif")
    assert bad_sidecar["raw"] == "{not json" and str(folder / "d.json") in bad_sidecar["detail"]


def test_wrong_types_in_metadata_reject_that_image(tmp_path):
    folder = make_folder(tmp_path, {
        "a.jpg": IMAGE, "a.json": json.dumps({"license": ["cc0"]}),
        "b.jpg": IMAGE, "c.jpg": IMAGE,
        "metadata.jsonl": json.dumps({"file": "b.jpg", "title": {"en": "x"}}) + "\n" + json.dumps([1]) + "\n",
    })
    rows = {r["source_id"] or r["origin"]: r for r in local.read(folder, "local", {"license": "cc0"})}
    assert (rows["a.jpg"]["reason"], rows["b.jpg"]["reason"]) == ("malformed_record", "malformed_record")
    assert "'license' is list" in rows["a.jpg"]["detail"] and "'title' is dict" in rows["b.jpg"]["detail"]
    assert rows[f"{folder / 'metadata.jsonl'}:2"]["reason"] == "malformed_record"
    assert rows["c.jpg"]["status"] == records.PENDING


def test_missing_or_non_folder_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list(local.read(tmp_path / "nowhere", "local", {}))
    (tmp_path / "file.jpg").write_bytes(IMAGE)
    with pytest.raises(NotADirectoryError, match="file.jpg"):
        list(local.read(tmp_path / "file.jpg", "local", {}))
