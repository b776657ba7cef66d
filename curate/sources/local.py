"""A local folder of images (the offline demo, contributors' folders).

``path`` is the folder. Every image file under it (jpg, jpeg, png, webp, gif, tif, tiff;
any case; recursively, in sorted order) is one row. Metadata, all optional:

- a sidecar ``<name>.json`` next to the image (``photo.jpg.json``, or same stem: ``photo.json``);
- a folder-level ``metadata.jsonl``, one object per line with ``file`` (relative to the folder);
- the folder default license, option ``license`` (e.g. the manifest says all files are CC0-1.0).

Known keys: title, creator, date, license, license_url, description, consent_id, source_id;
other string (or list of strings) keys go to ``meta``. For descriptive fields a sidecar wins
over ``metadata.jsonl``: the closer the statement is to the file, the more specifically it
speaks about it. License statements are all evidence (sidecar, ``metadata.jsonl``, folder
default, each ``license`` and ``license_url``): ``curate.verdict`` weighs them together, so a
file whose statements disagree is a conflict. A sidecar cannot make a file opt-in or
permission-granted: those need a consent in the contributions store or a permission file.

Options:
    license, license_url: the folder default license evidence.
    base_url: serve URL of the folder (e.g. ``http://127.0.0.1:8000/``); default ``file://`` URLs.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any, Iterator
from urllib.parse import quote

from curate import records, verdict
from curate.sources import AdapterOptions, json_lines, parse_options, text

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff"})
METADATA_FILE = "metadata.jsonl"
STRING_KEYS = ("title", "creator", "date", "license", "license_url", "description", "consent_id", "source_id")
LICENSE_KEYS = ("license", "license_url")


class Options(AdapterOptions):
    license: str | None = None
    license_url: str | None = None
    base_url: str | None = None


def read(path: Path, source: str, options: dict | Options) -> Iterator[dict]:
    settings = parse_options(Options, options, source)
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"local source folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"local source path {root} is not a folder")
    images = _images(root)
    listed: dict[str, tuple[str, dict[str, Any]]] = {}
    if (root / METADATA_FILE).is_file():
        yield from _read_metadata(root, source, images, listed)
    for rel, image in images.items():
        yield _row(source, root, rel, image, listed.get(rel), settings)


def _images(root: Path) -> dict[str, Path]:
    """Relative POSIX path -> file, sorted. Hidden files and folders (``.thumbnails``, macOS
    ``._photo.jpg`` resource forks) are not images even when their extension says so."""
    found = {}
    for file in root.rglob("*"):
        rel = file.relative_to(root)
        if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file() and not any(p.startswith(".") for p in rel.parts):
            found[rel.as_posix()] = file
    return dict(sorted(found.items()))


def _read_metadata(root: Path, source: str, images: dict[str, Path],
                   listed: dict[str, tuple[str, dict[str, Any]]]) -> Iterator[dict]:
    """Rejections for unusable ``metadata.jsonl`` lines; fills ``listed`` with the usable ones.

    A malformed entry for an existing image becomes that image's row (keyed like it) and the
    image leaves ``images``: it is not ingested without the metadata meant to describe it.
    """
    for origin, value, error in json_lines(root / METADATA_FILE):
        line = value if error else json.dumps(value, ensure_ascii=False)

        def reject(source_id: str | None, reason: str, detail: str) -> dict:
            return records.rejected(source, source_id, reason, f"{origin}: {detail}", origin=origin, raw=line)

        if error:
            yield reject(None, "malformed_record", error)
            continue
        if not isinstance(value, dict):
            yield reject(None, "malformed_record", f"expected an object, got {type(value).__name__}")
            continue
        rel = _relative(value.get("file"))
        if rel is None:
            yield reject(None, "malformed_record", f"'file' {value.get('file')!r} is not a path inside the folder")
            continue
        if rel in listed:
            yield reject(None, "malformed_record", f"second entry for {rel} (first at {listed[rel][0]})")
            continue
        if rel not in images:
            exists = (root / rel).is_file()
            yield reject(rel, "not_image" if exists else "missing_url",
                         f"'file' {rel} is {'not an image file this adapter reads' if exists else 'missing'}")
            continue
        fields, problem = _fields(value)
        if problem:
            listed[rel] = (origin, {})
            images.pop(rel)
            yield reject(rel, "malformed_record", problem)
            continue
        listed[rel] = (origin, fields)


def _relative(file: Any) -> str | None:
    """A ``file`` value as a normalised relative POSIX path; None when not a path inside the folder."""
    if not isinstance(file, str) or not file.strip():
        return None
    rel = PurePosixPath(file.strip().replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts:
        return None
    return rel.as_posix()


def _fields(value: dict) -> tuple[dict[str, Any], str | None]:
    """Known keys as strings plus descriptive extras; or the problem naming the bad key."""
    fields: dict[str, Any] = {}
    for key, item in value.items():
        if key == "file" or item is None:
            continue
        if key == "date" and isinstance(item, int) and not isinstance(item, bool):
            item = str(item)  # a bare year
        if key in STRING_KEYS:
            if not isinstance(item, str):
                return {}, f"'{key}' is {type(item).__name__}, not a string"
            if text(item):
                fields[key] = text(item)
        elif isinstance(item, str) or (isinstance(item, list) and all(isinstance(i, str) for i in item)):
            fields[key] = item
    return fields, None


def _sidecar(image: Path) -> Path | None:
    # Only sidecars of images are read: a .json with no image beside it describes nothing
    # we ingest (an original in another format, a deleted image, notes) and gets no row.
    for candidate in (image.with_name(image.name + ".json"), image.with_suffix(".json")):
        if candidate.is_file():
            return candidate
    return None


def _read_sidecar(sidecar: Path) -> tuple[dict[str, Any], str, str | None]:
    """(fields, raw text, problem): a problem rejects the image, with the text kept."""
    raw = sidecar.read_text(encoding="utf-8", errors="replace")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        return {}, raw, f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"
    if not isinstance(value, dict):
        return {}, raw, f"expected an object, got {type(value).__name__}"
    fields, problem = _fields(value)
    return fields, raw, problem


def _row(source: str, root: Path, rel: str, image: Path,
         listed: tuple[str, dict[str, Any]] | None, options: Options) -> dict:
    origin, fields = listed if listed else (str(image), {})
    evidence = _evidence(METADATA_FILE, fields)
    sidecar = _sidecar(image)
    if sidecar:
        origin = f"{sidecar}:1"
        extra, raw, problem = _read_sidecar(sidecar)
        if problem:
            return records.rejected(source, rel, "malformed_record", f"{origin}: {problem}", origin=origin, raw=raw)
        evidence = _evidence(sidecar.relative_to(root).as_posix(), extra) + evidence
        fields = {**fields, **extra}
    # The folder default is evidence too: a sidecar that contradicts it is a conflict to look
    # at, not an override.
    evidence += _evidence("manifest:options", options.model_dump())
    license_url = fields.get("license_url") or text(options.license_url)
    meta = {key: item for key, item in fields.items() if key not in STRING_KEYS}
    return records.candidate(
        source, fields.get("source_id", rel), origin=origin, url=_url(rel, image, options.base_url),
        **verdict.primary(evidence),
        license_url=license_url, creator=fields.get("creator"), title=fields.get("title"), date=fields.get("date"),
        consent_id=fields.get("consent_id"),
        meta={"description": fields.get("description"), "file": rel, **meta},
    )


def _evidence(where: str, fields: dict[str, Any]) -> list[verdict.Piece]:
    return [piece for key in LICENSE_KEYS for piece in verdict.pieces(f"{where}:{key}", text(fields.get(key)))]


def _url(rel: str, image: Path, base_url: str | None) -> str:
    if base_url:
        return f"{base_url.rstrip('/')}/{quote(rel)}"
    return image.resolve().as_uri()
