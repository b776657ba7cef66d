"""National Gallery of Art open data: ``objects.csv`` joined with ``published_images.csv``.

``path`` is the folder holding both CSVs (the ``data/`` folder of NationalGalleryOfArt/opendata),
or either CSV with the other beside it. One row per published image,
keyed by the image ``uuid``; ``depictstmsobjectid`` names the object it shows.
Image URLs are IIIF Image API 2: ``{iiifurl}/full/{size}/0/default.jpg``.

Options:
    views: ``primary`` (default: the object's main view only) or ``all`` (alternate views too).
    size: IIIF size parameter (default ``!1024,1024``: best fit in a 1024 px box).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

from curate import records, verdict
from curate.sources import AdapterOptions, parse_options, text
from curate.sources._fields import flag, ident, malformed, require_path

OBJECTS = "objects.csv"
IMAGES = "published_images.csv"
PAGE_URL = "https://www.nga.gov/collection/art-object-page.{id}.html"
META_FIELDS = ("medium", "dimensions", "classification", "subclassification", "visualbrowserclassification",
               "departmentabbr", "creditline", "inscription", "attributioninverted", "accessionnum", "portfolio",
               "series", "volume")
# Only these object columns are kept: objects.csv has ~140k rows with long provenance texts.
OBJECT_FIELDS = ("objectid", "title", "displaydate", "attribution", *META_FIELDS)
# ``openaccess`` is a 0/1 flag: NGA releases its open access images as CC0; the rest are
# published for display only (in copyright, or shown small under fair use).
LICENSES = {True: "CC0-1.0", False: "all-rights-reserved"}


class Options(AdapterOptions):
    views: Literal["primary", "all"] = "primary"
    size: str = "!1024,1024"


def read(path: Path, source: str, options: dict | Options) -> Iterator[dict]:
    settings = parse_options(Options, options, source)
    objects_path, images_path = csv_paths(require_path(path, source, folder_ok=True), source)
    return _read(source, objects_path, images_path, settings.views, settings.size)


def csv_paths(path: Path, source: str) -> tuple[Path, Path]:
    folder = path if path.is_dir() else path.parent
    objects_path = path if path.is_file() and path.name != IMAGES else folder / OBJECTS
    images_path = folder / IMAGES
    for needed in (objects_path, images_path):
        require_path(needed, source)
    return objects_path, images_path


def csv_rows(path: Path) -> Iterator[tuple[str, dict | None, str | None]]:
    """``(origin, row, error)`` per CSV record; origin is the line the record starts on.

    Lines are counted here rather than with ``reader.line_num``, which does not move past
    a record the csv module rejects; quoted fields may span lines. A row whose field count
    differs from the header's is an error.
    """
    consumed = 0

    def counted(f: Iterable[str]) -> Iterator[str]:
        nonlocal consumed
        for line in f:
            consumed += 1
            yield line

    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.DictReader(counted(f))
        fieldnames = reader.fieldnames or []
        while True:
            origin = f"{path}:{consumed + 1}"
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield origin, None, f"unreadable CSV record: {e}"
                continue
            if None in row or None in row.values():
                yield origin, row, f"{len(fieldnames)} columns expected, the row has a different number"
            else:
                yield origin, row, None


def load_objects(path: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """objectid -> object row, and objectid -> why its row is unusable (for the images that need it)."""
    objects, broken = {}, {}
    for origin, row, error in csv_rows(path):
        object_id = ident(row.get("objectid")) if row else None
        if error and object_id:
            broken[object_id] = f"its row {origin} is malformed ({error})"
        elif object_id:
            objects[object_id] = {name: row.get(name) for name in OBJECT_FIELDS}
    return objects, broken


def _read(source: str, objects_path: Path, images_path: Path, views: str, size: str) -> Iterator[dict]:
    objects, broken = load_objects(objects_path)
    for origin, row, error in csv_rows(images_path):
        if error:
            uuid = ident(row.get("uuid")) if row else None
            yield malformed(source, origin, error, _raw(row) if row else None, uuid)
        elif views == "all" or text(row.get("viewtype")) == "primary":
            yield _image_row(source, origin, row, objects, broken, objects_path, size)


def _image_row(source: str, origin: str, image: dict, objects: dict[str, dict], broken: dict[str, str],
               objects_path: Path, size: str) -> dict:
    uuid = ident(image.get("uuid"))
    if uuid is None:
        return records.rejected(source, None, "missing_id", f"{origin}: no uuid", origin=origin, raw=_raw(image))
    object_id = ident(image.get("depictstmsobjectid"))
    obj = objects.get(object_id) if object_id else None
    if obj is None:
        why = broken.get(object_id or "", f"no row in {objects_path}")
        return malformed(source, origin, f"depictstmsobjectid {object_id!r}: {why}", _raw(image), uuid)
    fields = _described(obj, image, object_id, origin)
    iiif_url = text(image.get("iiifurl"))
    if iiif_url is None:
        return records.rejected(source, uuid, "missing_url", f"{origin}: iiifurl is empty", **fields)
    return records.candidate(source, uuid, url=image_url(iiif_url, size), **fields)


def image_url(iiif_url: str, size: str) -> str:
    return f"{iiif_url.rstrip('/')}/full/{size}/0/default.jpg"


def _raw(row: dict) -> str:
    """The CSV record back as one CSV line with the fields it had (short or long), for ``raw``."""
    values = [v for k, v in row.items() if k is not None and v is not None] + list(row.get(None) or [])
    out = io.StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue().rstrip("\r\n")


def _described(obj: dict, image: dict, object_id: str, origin: str) -> dict[str, Any]:
    openaccess = image.get("openaccess")
    return dict(
        origin=origin,
        page_url=PAGE_URL.format(id=object_id),
        **verdict.primary(verdict.mapped("openaccess", openaccess, LICENSES.get(flag(openaccess)))),
        creator=text(obj.get("attribution")),
        title=text(obj.get("title")),
        date=text(obj.get("displaydate")),
        meta=_meta(obj, image),
    )


def _meta(obj: dict, image: dict) -> dict[str, str | None]:
    meta = {name: text(obj.get(name)) for name in META_FIELDS}
    meta["objectid"] = text(obj.get("objectid"))
    meta["viewtype"] = text(image.get("viewtype"))
    # Written for screen readers: a plain description of what the image shows.
    meta["assistivetext"] = text(image.get("assistivetext"))
    return meta
