"""The license verdict: every piece of evidence weighed, claims that need a record, real records kept."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from curate import licenses, records, shards, stages, verdict
from curate.config import ConfigError, load_pipeline, resolve_sources
from curate.ingest import Ingest
from curate.licenses import Policy
from curate.sources import commons, finna, flickr, local, smithsonian
from curate.verdict import COPYRIGHTED, MENTION, Piece

FIXTURES = Path(__file__).parent / "fixtures" / "sources"
LICENSE_REASONS = {"license_conflict", "license_not_allowed", "license_unknown", "permission_unverified"}


def judged(rows: list[dict]) -> list[dict]:
    return verdict.apply_policy(records.to_table(rows), Policy.default()).to_pylist()


def commons_page(pageid: int = 1, categories: str | None = None, **values: str) -> dict:
    ext = {name: {"value": value} for name, value in values.items()}
    if categories is not None:
        ext["Categories"] = {"value": categories}
    return {"pageid": pageid, "title": f"File:P{pageid}.jpg",
            "imageinfo": [{"url": f"https://upload.example/P{pageid}.jpg", "extmetadata": ext}]}


def read_commons(tmp_path: Path, *pages: dict) -> list[dict]:
    path = tmp_path / "pages.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in pages) + "\n")
    return judged(list(commons.read(path, "commons", {})))


# --- one value, its text and its links -------------------------------------------------------


def test_html_text_and_link_that_disagree_are_no_license_and_a_conflict():
    value = '<a href="https://creativecommons.org/licenses/by-nc/4.0/">Public domain</a>'
    assert licenses.normalize(value) is None
    result = verdict.decide(verdict.pieces("LicenseShortName", value), Policy.default())
    assert (result.allowed, result.reason) == (False, "license_conflict")
    assert "'Public domain' -> public-domain" in result.detail
    assert "'https://creativecommons.org/licenses/by-nc/4.0/' -> CC-BY-NC-4.0" in result.detail


def test_html_text_and_link_that_agree_are_that_license():
    value = '<a href="https://creativecommons.org/publicdomain/zero/1.0/deed.en">CC0 1.0 Universal</a>'
    assert verdict.decide(verdict.pieces("LicenseShortName", value), Policy.default()).allowed


def test_a_link_to_a_user_page_says_nothing_but_an_unread_license_page_is_unknown():
    user = '<a href="//commons.wikimedia.org/wiki/User:Someone">Public domain</a>'
    assert verdict.decide(verdict.pieces("UsageTerms", user), Policy.default()).allowed
    odd = '<a href="https://creativecommons.org/licenses/by-xx/9.0/">Public domain</a>'
    assert verdict.decide(verdict.pieces("UsageTerms", odd), Policy.default()).reason == "license_unknown"


# --- Commons: every field, categories, the copyrighted flag, creators ----------------------


@pytest.mark.parametrize("values", [
    {"License": "cc0", "LicenseShortName": "CC BY-NC 4.0"},
    {"License": "pd", "LicenseShortName": "Public domain", "LicenseUrl": "https://creativecommons.org/licenses/by-nc/4.0/"},
    {"License": "cc0", "LicenseShortName": "CC0", "UsageTerms": "Non-commercial use only"},
    {"License": "pd", "LicenseShortName": "Public domain", "UsageTerms": "Editorial use only"},
])
def test_commons_fields_that_disagree_are_a_conflict_quoting_every_field(tmp_path, values):
    [row] = read_commons(tmp_path, commons_page(**values))
    assert (row["status"], row["reason"]) == ("rejected", "license_conflict")
    for value in values.values():
        assert repr(value) in row["detail"]


def test_a_pd_nasa_category_makes_plain_public_domain_a_conflict(tmp_path):
    page = commons_page(License="pd", LicenseShortName="Public domain", UsageTerms="Public domain",
                        Copyrighted="False", categories="Images from NASA|PD NASA|Space shuttles",
                        Artist="The original uploader was Somebody at Italian Wikipedia")
    [row] = read_commons(tmp_path, page)
    assert (row["status"], row["reason"]) == ("rejected", "license_conflict")
    assert "'PD NASA' -> us-government-work (us-government)" in row["detail"]
    assert row["creator"] is None  # the upload log names the uploader, not the maker


def test_categories_that_name_no_license_say_nothing(tmp_path):
    page = commons_page(License="cc0", LicenseShortName="CC0", Copyrighted="True",
                        UsageTerms="Creative Commons Zero, Public Domain Dedication",
                        categories="CC-Zero|Self-published work|Paintings by Someone")
    [row] = read_commons(tmp_path, page)
    assert (row["status"], row["license"]) == ("pending", "CC0-1.0")
    pieces = verdict.from_json(row["license_evidence"])
    assert [p.value for p in pieces if p.kind == MENTION] == ["CC-Zero", "Self-published work", "Paintings by Someone"]


def test_the_copyrighted_flag_must_agree_with_the_family(tmp_path):
    rows = read_commons(tmp_path, commons_page(1, License="pd", LicenseShortName="Public domain", Copyrighted="True"),
                        commons_page(2, License="pd", LicenseShortName="Public domain", Copyrighted="False"))
    assert [(r["status"], r["reason"]) for r in rows] == [("rejected", "license_conflict"), ("pending", "")]
    assert "contradicts family public-domain" in rows[0]["detail"]


def test_silent_evidence_is_ignored_not_a_conflict(tmp_path):
    [row] = read_commons(tmp_path, commons_page(License="cc0", LicenseShortName="CC0", UsageTerms="see description"))
    assert (row["status"], row["license"]) == ("pending", "CC0-1.0")


def test_a_template_naming_two_licenses_is_two_pieces():
    found = verdict.pieces("template", "{{self|cc-zero|GFDL}}")
    assert [p.value for p in found] == ["cc-zero", "GFDL"]
    assert verdict.decide(found, Policy.default()).reason == "license_conflict"


def test_every_real_commons_page_keeps_its_verdict():
    path = FIXTURES / "wikimedia-commons" / "pages.jsonl"
    rows = judged(list(commons.read(path, "commons", {})))
    kept = {r["license"] for r in rows if r["status"] == "pending"}
    refused = {(r["reason"], r["license"]) for r in rows if r["status"] == "rejected"}
    assert kept == {"public-domain", "CC0-1.0"}
    assert {reason for reason, _ in refused} == {"license_not_allowed"}
    assert all(r["license_evidence"] for r in rows)


@pytest.mark.parametrize("adapter, fixture", [
    (smithsonian, "smithsonian-open-access/records.jsonl"),
    (finna, "finna/records.jsonl"),
])
def test_real_records_of_other_sources_keep_their_verdict(adapter, fixture):
    rows = judged(list(adapter.read(FIXTURES / fixture, "s", {})))
    expected = {"smithsonian": {"CC0-1.0"}, "finna": set()}[adapter.__name__.rsplit(".", 1)[1]]
    assert {r["license"] for r in rows if r["status"] == "pending"} == expected
    assert not [r for r in rows if r["reason"] in ("license_conflict", "license_unknown")]


# --- Finna, Flickr, Smithsonian -------------------------------------------------------------


def test_finna_label_and_link_are_weighed_together(tmp_path):
    record = {"id": "x.1", "images": ["/Cover/Show?id=x.1"], "title": "T",
              "imageRights": {"copyright": "CC0", "link": "http://creativecommons.org/licenses/by-nc/4.0/deed.fi"}}
    path = tmp_path / "finna.jsonl"
    path.write_text(json.dumps(record) + "\n")
    [row] = judged(list(finna.read(path, "finna", {})))
    assert (row["status"], row["reason"]) == ("rejected", "license_conflict")


def test_flickr_description_that_reserves_rights_refuses_a_cc0_id(tmp_path):
    photos = [{"id": "1", "license": "9", "url_o": "https://x/1.jpg",
               "description": {"_content": "All rights reserved"}},
              {"id": "2", "license": "9", "url_o": "https://x/2.jpg", "description": {"_content": "A heron at dawn"}}]
    path = tmp_path / "flickr.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in photos) + "\n")
    rows = judged(list(flickr.read(path, "flickr", {})))
    assert [(r["reason"], r["license"]) for r in rows] == [("license_conflict", "CC0-1.0"), ("", "CC0-1.0")]


def test_smithsonian_object_rights_that_restrict_use_refuse_the_image(tmp_path):
    media = {"type": "Images", "idsId": "A", "content": "https://ids/A", "usage": {"access": "CC0"}}
    rights = [{"label": "Rights", "content": "For personal use only"}]
    row = {"id": "r1", "content": {"descriptiveNonRepeating": {"online_media": {"media": [media]}},
                                   "freetext": {"objectRights": rights}}}
    path = tmp_path / "si.jsonl"
    path.write_text(json.dumps(row) + "\n")
    [got] = judged(list(smithsonian.read(path, "si", {})))
    assert got["reason"] == "license_conflict"


# --- claims that need a record ----------------------------------------------------------------


def write_local(tmp_path: Path, sidecars: dict[str, dict]) -> Path:
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, sidecar in sidecars.items():
        (folder / name).write_bytes(b"not decoded at ingest")
        (folder / f"{name}.json").write_text(json.dumps(sidecar))
    return folder


def test_free_text_cannot_claim_opt_in_or_permission(tmp_path):
    folder = write_local(tmp_path, {
        "a.jpg": {"license": "opt-in", "consent_id": "c-1"},
        "b.jpg": {"license": "Used with permission"},
        "c.jpg": {"license": "Permission granted"},
        "d.jpg": {"license": "CC0"},
    })
    rows = judged(list(local.read(folder, "mine", {})))
    assert [(r["source_id"], r["reason"]) for r in rows] == [
        ("a.jpg", "permission_unverified"), ("b.jpg", "permission_unverified"),
        ("c.jpg", "permission_unverified"), ("d.jpg", "")]
    assert "claims opt-in but no active consent in the contributions store backs it" in rows[0]["detail"]
    assert "no valid permission file backs it" in rows[1]["detail"]


def test_a_sidecar_that_contradicts_the_folder_default_is_a_conflict(tmp_path):
    folder = write_local(tmp_path, {"a.jpg": {"license": "CC0"}})
    [row] = judged(list(local.read(folder, "mine", {"license": "CC BY-NC 4.0"})))
    assert row["reason"] == "license_conflict"


PERMISSION = """\
id: archive-2026
grantor: Example Photo Archive, the rights holder
covers:
  source: archive
  description: the 2019 donation
  source_ids: [a.jpg, b.jpg]
scope: [{scope}]
date: 2026-03-01
expires: {expires}
evidence: https://example.org/letters/2026-03-01.pdf
"""


def run_ingest(tmp_path: Path, permission: str) -> list[dict]:
    folder = write_local(tmp_path, {"a.jpg": {"license": "All rights reserved"}, "b.jpg": {},
                                    "c.jpg": {"license": "Used with permission"}})
    (tmp_path / "archive-2026.yaml").write_text(permission)
    manifest = tmp_path / "archive.yaml"
    manifest.write_text(f"source: archive\nname: Archive\nadapter: local\n"
                        f"metadata: [{folder}]\npermissions: [./archive-2026.yaml]\n")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"name: t\nsources:\n  - manifest: {manifest}\n")
    sources = resolve_sources(load_pipeline(pipeline), pipeline, {"out": str(tmp_path)})
    table = pa.concat_tables(Ingest(sources)(pa.table({"source": ["archive"], "path": [str(folder)]})))
    return judged(table.to_pylist())


def test_a_permission_file_the_manifest_names_grants_permission(tmp_path):
    rows = run_ingest(tmp_path, PERMISSION.format(scope="training, model_release", expires="null"))
    got = {r["source_id"]: (r["status"], r["reason"], r["license"]) for r in rows}
    assert got == {"a.jpg": ("pending", "", "permission-granted"), "b.jpg": ("pending", "", "permission-granted"),
                   "c.jpg": ("rejected", "permission_unverified", "permission-granted")}
    pieces = verdict.from_json(rows[0]["license_evidence"])
    assert "archive-2026.yaml, granted by Example Photo Archive" in pieces[0].verified
    assert any(p.value == "All rights reserved" for p in pieces)  # the record's own words are kept


@pytest.mark.parametrize("scope, expires, why", [
    ("training", "2026-04-01", "expired on 2026-04-01"),
    ("model_release", "null", "does not include training"),
])
def test_a_permission_that_has_lapsed_or_leaves_out_training_grants_nothing(tmp_path, scope, expires, why):
    rows = run_ingest(tmp_path, PERMISSION.format(scope=scope, expires=expires))
    assert {r["reason"] for r in rows} == {"permission_unverified"}
    assert why in rows[1]["detail"]


def test_a_permission_file_for_another_source_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="covers.source is 'other'"):
        run_ingest(tmp_path, PERMISSION.format(scope="training", expires="null").replace("source: archive",
                                                                                         "source: other"))


# --- registry coverage ------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("PD-old-70", "public-domain"), ("{{PD-old-100}}", "public-domain"), ("PD-old-70-expired", "public-domain"),
    ("PD-old-auto-expired", "public-domain"), ("{{cc-zero}}", "CC0-1.0"), ("PD-self", "public-domain"),
    ("CC-PD-Mark", "PDM-1.0"), ("Creative Commons Zero", "CC0-1.0"),
    ("CC0 1.0 Universal Public Domain Dedication", "CC0-1.0"), ("PD-Art (PD-old-100)", "public-domain"),
    ("{{PD-Art|PD-US-expired}}", "public-domain-us"), ("PD-US-not-renewed", "public-domain-us"),
    ("PD-USGov-NASA", "us-government-work"), ("PD NASA", "us-government-work"),
    ("Copyrighted free use", "copyrighted-free-use"), ("GFDL-self", "GFDL"),
    ("https://rightsstatements.org/vocab/InC/1.0/", "all-rights-reserved"),
    ("http://rightsstatements.org/page/NoC-US/1.0/?language=en", "public-domain-us"),
    ("https://rightsstatements.org/vocab/NoC-NC/1.0/", "restricted-use"),
    ("https://rightsstatements.org/vocab/CNE/1.0/", "rights-undetermined"),
    ("Public\u200bdomain", "public-domain"), ("CC0\x00", "CC0-1.0"), ("\ufeffCC0", "CC0-1.0"),
    ("ＣＣ０", "CC0-1.0"), ("CC BY 2.0 uk", "CC-BY-2.0-UK"),
])
def test_wikimedia_templates_rights_statements_and_unicode(value, expected):
    assert licenses.normalize(value) == expected


@pytest.mark.parametrize("value", ["CC BY 3.0 NC", "CC BY-SA 3.0 xx", "CC BY 3.0 SA"])
def test_a_port_needs_a_real_country_code(value):
    assert licenses.normalize(value) is None


# --- provenance -----------------------------------------------------------------------------


def test_the_shard_json_keeps_every_piece():
    pieces = [Piece("License", "cc0"), Piece("Copyrighted", "True", COPYRIGHTED),
              Piece("Categories", "CC-Zero", MENTION)]
    row = records.candidate("commons", "1", **verdict.primary(pieces))
    meta = shards.sample_json({**row, "width": 1, "height": 1, "original_width": 1, "original_height": 1}, (1, 1))
    assert meta["license_evidence"]["field"] == "License"
    assert meta["license_evidence"]["pieces"] == [
        {"field": "License", "value": "cc0"}, {"field": "Copyrighted", "value": "True", "kind": "copyrighted"},
        {"field": "Categories", "value": "CC-Zero", "kind": "mention"}]


def test_every_rejection_reason_is_a_license_reason():
    assert LICENSE_REASONS <= set(stages.reasons(records.REJECTED))
