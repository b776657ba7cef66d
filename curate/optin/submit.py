"""Submissions: one image (bytes or a URL) under a contributor's active consent, or a folder.

A folder submission (``cleanroom optin submit FOLDER``) is what an operator receives from a
contributor by other means than the web page::

    FOLDER/consent.yaml     the signed consent (see ``consent.ConsentFile``)
    FOLDER/metadata.jsonl   optional: {"file": "a.jpg", "caption": ..., "title": ...}
                            or {"url": "https://...", "caption": ..., "title": ...}
    FOLDER/**               the images; any name, any extension: the type is sniffed

File names only find files inside the folder (matched as strings against the folder's
listing, never joined into a path) and appear in the report; nothing stores them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from curate.optin import safety, urls
from curate.optin.consent import CONSENT_FILE, ConsentFile, load
from curate.optin.errors import OptinError, UploadRefused
from curate.optin.options import SourceOptions
from curate.optin.store import Consent, Contributor, Store, Submission

METADATA_FILE = "metadata.jsonl"
CLI_CHANNEL = "cli"


def _consent_for_submitting(store: Store, contributor_id: str) -> Consent:
    consent = store.active_consent(contributor_id)
    if consent is None:
        raise UploadRefused("no_consent", "accept the consent text before submitting images")
    return consent


def submit_bytes(store: Store, contributor_id: str, data: bytes, options: SourceOptions, *,
                 caption: str | None = None, title: str | None = None, source_url: str | None = None,
                 budget: safety.PixelBudget | None = None) -> Submission:
    """Clean and store one image. Consent is checked before the work (a quick refusal) and again by
    the store in the insert itself (a revocation while the image was being cleaned wins)."""
    consent = _consent_for_submitting(store, contributor_id)
    image = safety.clean(data, options.limits, budget)
    return store.add_submission(contributor_id, consent.consent_id, image, caption, title, source_url)


def submit_url(store: Store, contributor_id: str, url: str, options: SourceOptions, *,
               caption: str | None = None, title: str | None = None,
               budget: safety.PixelBudget | None = None) -> Submission:
    _consent_for_submitting(store, contributor_id)  # before fetching anything on their behalf
    data = urls.fetch(url, options.allow_hosts, options.limits.max_bytes, options.fetch_timeout_s)
    return submit_bytes(store, contributor_id, data, options, caption=caption, title=title, source_url=url,
                        budget=budget)


@dataclass
class FolderReport:
    contributor_id: str
    consent_id: str
    accepted: list[dict[str, str]] = field(default_factory=list)
    already: list[dict[str, str]] = field(default_factory=list)  # submitted before (a re-run)
    refused: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return vars(self)


def submit_folder(store: Store, folder: Path, options: SourceOptions) -> FolderReport:
    folder = Path(folder)
    if not folder.is_dir():
        raise OptinError(f"{folder}: not a folder")
    consent_path = folder / CONSENT_FILE
    signed = ConsentFile.load(consent_path)
    contributor = _contributor(store, signed)
    consent = _consent(store, contributor, signed, hashlib.sha256(consent_path.read_bytes()).hexdigest())
    report = FolderReport(contributor.contributor_id, consent.consent_id)
    for item, fields, problem in _items(folder):
        try:
            if problem:
                raise UploadRefused("malformed_metadata", problem)
            if "url" in fields:
                sub = submit_url(store, contributor.contributor_id, fields["url"], options,
                                 caption=fields.get("caption"), title=fields.get("title"))
            else:
                sub = submit_bytes(store, contributor.contributor_id, fields["path"].read_bytes(), options,
                                   caption=fields.get("caption"), title=fields.get("title"))
            report.accepted.append({"item": item, "submission_id": sub.submission_id})
        except UploadRefused as e:
            entry = {"item": item, "code": e.code, "message": str(e)}
            (report.already if e.code == "duplicate" else report.refused).append(entry)
        except OptinError as e:  # a caption or title that does not validate
            report.refused.append({"item": item, "code": "invalid_text", "message": str(e)})
    return report


def _contributor(store: Store, signed: ConsentFile) -> Contributor:
    """The contributor a consent file speaks for: one registered from a file before with the same
    contact, or a new one. Web registrations are never merged in: nobody verified that whoever
    registered on the web owns the address."""
    for contributor in store.contributors_by_contact(signed.contact):
        if contributor.channel == CLI_CHANNEL and store.revocation(contributor.contributor_id) is None:
            return contributor
    return store.register(signed.display_name, signed.contact, CLI_CHANNEL, with_token=False)[0]


def _consent(store: Store, contributor: Contributor, signed: ConsentFile, file_sha256: str) -> Consent:
    active = store.active_consent(contributor.contributor_id)
    if active and active.text_version == signed.consent and active.scope == signed.scope:
        return active
    evidence = {"channel": CLI_CHANNEL, "accepted_on": signed.accepted_on.isoformat(),
                "statement": signed.evidence, "consent_file_sha256": file_sha256}
    return store.add_consent(contributor.contributor_id, load(signed.consent), signed.scope, evidence)


def _files(folder: Path) -> dict[str, Path]:
    """Relative POSIX name -> regular file. Symlinks are skipped: they could point anywhere."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_symlink() or not path.is_file() or any(p.startswith(".") for p in rel.parts):
            continue
        if rel.as_posix() not in (CONSENT_FILE, METADATA_FILE):
            found[rel.as_posix()] = path
    return found


def _items(folder: Path) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """(item name for the report, fields, problem): listed entries first, then unlisted files."""
    files = _files(folder)
    listed: set[str] = set()
    metadata = folder / METADATA_FILE
    # "\n" only: splitlines would also break a line at a U+2028 inside a caption.
    lines = metadata.read_text(encoding="utf-8").split("\n") if metadata.is_file() else []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{METADATA_FILE}:{number}"
        entry, problem = _entry(line, files)
        if problem:
            yield where, {}, f"{where}: {problem}"
            continue
        if "file" in entry:
            listed.add(entry["file"])
            yield entry["file"], {**entry, "path": files[entry["file"]]}, None
        else:
            yield entry["url"], entry, None
    for name, path in files.items():
        if name not in listed:
            yield name, {"path": path}, None


def _entry(line: str, files: dict[str, Path]) -> tuple[dict[str, str], str | None]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        return {}, f"invalid JSON: {e.msg}"
    if not isinstance(value, dict) or not value.keys() <= {"file", "url", "caption", "title"}:
        return {}, "expected an object with file or url, and optional caption and title"
    if not all(isinstance(v, str) for v in value.values()):
        return {}, "every value must be a string"
    if ("file" in value) == ("url" in value):
        return {}, "give exactly one of file and url"
    if "file" in value:
        name = PurePosixPath(value["file"].replace("\\", "/")).as_posix()
        if name not in files:
            return {}, f"file {value['file']!r} is not a file in the folder"
        value["file"] = name
    return value, None
