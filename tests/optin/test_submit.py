"""Folder submissions (``cleanroom optin submit``): consent file, sniffed types, names never paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from curate.optin import submit
from curate.optin.errors import OptinError
from curate.optin.options import SourceOptions
from curate.optin.store import FILES

from .conftest import picture

CONSENT = {"consent": "consent-v1", "accepted": True, "accepted_on": "2026-11-20", "display_name": "Ann Example",
           "contact": "ann@example.org", "scope": {"training": True, "model_release": False, "credit": True},
           "evidence": "signed form received by post, ticket 1234"}


def folder_with(tmp_path: Path, files: dict[str, bytes | str], consent: dict | None = None) -> Path:
    folder = tmp_path / "from-ann"
    for name, content in {"consent.yaml": yaml.safe_dump(consent or CONSENT), **files}.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder


def test_folder_submission_sniffs_types_and_stores_by_content_hash(store, tmp_path):
    png = picture(1, fmt="PNG")
    folder = folder_with(tmp_path, {
        "holiday.jpg": png,  # a PNG named .jpg
        "page.jpg": "<html><body>not an image</body></html>",
        "nested/photo.webp": picture(2, fmt="WEBP"),
        "metadata.jsonl": "\n".join([json.dumps({"file": "holiday.jpg", "caption": "A beach at dusk",
                                                 "title": "Dusk"}),
                                     json.dumps({"file": "../outside.jpg"}),
                                     "not json"]) + "\n",
    })
    (tmp_path / "outside.jpg").write_bytes(picture(3))
    report = submit.submit_folder(store, folder, SourceOptions())
    assert {a["item"] for a in report.accepted} == {"holiday.jpg", "nested/photo.webp"}
    refused = {r["item"]: r["code"] for r in report.refused}
    assert refused == {"page.jpg": "not_an_image", "metadata.jsonl:2": "malformed_metadata",
                       "metadata.jsonl:3": "malformed_metadata"}
    subs = {s.caption: s for s in store.submissions(report.contributor_id)}
    holiday = subs["A beach at dusk"]
    assert (holiday.media_type, holiday.title) == ("image/png", "Dusk")
    stored = sorted(p.name for p in (store.root / FILES).iterdir())
    assert stored == sorted(s.file for s in subs.values()) and all(len(n.split(".")[0]) == 64 for n in stored)
    assert not any(store.root.rglob("*holiday*")) and not any(store.root.rglob("*nested*"))
    assert not any("outside" in json.dumps(e) for e in store.audit_entries())


def test_consent_file_speaks_for_one_contributor_across_reruns(store, tmp_path):
    folder = folder_with(tmp_path, {"a.jpg": picture(4)})
    first = submit.submit_folder(store, folder, SourceOptions())
    second = submit.submit_folder(store, folder, SourceOptions())
    assert (second.contributor_id, second.consent_id) == (first.contributor_id, first.consent_id)
    assert second.accepted == [] and [a["code"] for a in second.already] == ["duplicate"]
    given = store.active_consent(first.contributor_id)
    assert given.scope.names() == ["training", "credit"]
    assert json.loads(given.evidence)["statement"] == CONSENT["evidence"]
    assert b"ann@example.org" not in (store.root / "registry.sqlite").read_bytes()


@pytest.mark.parametrize("change, message", [
    ({"accepted": False}, "accepted"),
    ({"consent": "consent-v9"}, "consent-v9"),
    ({"scope": {"training": False, "model_release": True, "credit": True}}, "scope.training"),
    ({"contact": None}, "contact"),
    ({"nickname": "x"}, "nickname"),
])
def test_consent_file_errors_name_the_file_and_field(store, tmp_path, change, message):
    folder = folder_with(tmp_path, {"a.jpg": picture(5)}, {**CONSENT, **change})
    with pytest.raises(OptinError, match=message) as caught:
        submit.submit_folder(store, folder, SourceOptions())
    assert "consent.yaml" in str(caught.value)
    assert store.submissions() == []


def test_a_folder_without_consent_file_is_refused(store, tmp_path):
    folder = tmp_path / "bare"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(picture(6))
    with pytest.raises(OptinError, match="consent.yaml"):
        submit.submit_folder(store, folder, SourceOptions())


def test_url_entries_are_checked_before_any_fetch(store, tmp_path):
    folder = folder_with(tmp_path, {"metadata.jsonl": json.dumps({"url": "http://169.254.169.254/latest"}) + "\n"})
    report = submit.submit_folder(store, folder, SourceOptions())
    assert [r["code"] for r in report.refused] == ["url_not_allowed"]


def test_symlinks_in_a_folder_are_not_followed(store, tmp_path):
    folder = folder_with(tmp_path, {"a.jpg": picture(7)})
    secret = tmp_path / "secret.png"
    secret.write_bytes(picture(8, fmt="PNG"))
    (folder / "link.jpg").symlink_to(secret)
    report = submit.submit_folder(store, folder, SourceOptions())
    assert [a["item"] for a in report.accepted] == ["a.jpg"]
