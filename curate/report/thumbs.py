"""Thumbnails for the run report: kept samples read from their shard tars, rejected records from the
fetch store (``curate.fetch.read_images``), each re-encoded small under ``report/thumbs/``.

Only bounded samples are asked for, so the cost does not grow with the run. A thumbnail is named by
a hash of its record key (record values never become paths). Images rejected as NSFW are blurred:
the report is for people reviewing the run, not a gallery of what it refused.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageFilter, UnidentifiedImageError

from curate import fetch
from curate.runfolder import RunFolder

FOLDER = "thumbs"
SIZE = 160
BLUR_RADIUS = 12

log = logging.getLogger("cleanroom.report")


def name(key: str) -> str:
    return f"{FOLDER}/{hashlib.sha1(key.encode()).hexdigest()[:20]}.jpg"


def save(data: bytes, key: str, report_dir: Path, blur: bool = False) -> str | None:
    """The thumbnail's path relative to the report folder; None (logged) for bytes no decoder reads."""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            picture.draft("RGB", (SIZE, SIZE))  # JPEGs decode at a fraction of their size
            small = picture.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        log.warning("report: record %s: its stored image cannot be decoded (%s); shown without it", key, e)
        return None
    small.thumbnail((SIZE, SIZE))
    if blur:
        small = small.filter(ImageFilter.GaussianBlur(BLUR_RADIUS))
    relative = name(key)
    path = report_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    small.save(path, format="JPEG", quality=80)
    return relative


def from_shards(folder: RunFolder, keys_by_shard: dict[str, list[str]], report_dir: Path) -> dict[str, str]:
    """Thumbnails of kept samples: key -> path relative to the report folder."""
    made = {}
    for shard, keys in sorted(keys_by_shard.items()):
        tar_path = folder.shards / f"{shard}.tar"
        with tarfile.open(tar_path) as tar:
            for key in keys:
                try:
                    data = tar.extractfile(f"{key}.jpg").read()
                except KeyError:
                    raise FileNotFoundError(f"{tar_path}: no {key}.jpg, though the catalog lists {key} in "
                                            f"{shard}") from None
                relative = save(data, key, report_dir)
                if relative:
                    made[key] = relative
    return made


def from_fetch_store(folder: RunFolder, keys_by_source: dict[str, list[str]], report_dir: Path,
                     blurred: frozenset[str] = frozenset()) -> dict[str, str]:
    """Thumbnails of fetched records (rejected after download): key -> path; keys without a stored image
    are left out."""
    made = {}
    for source, keys in sorted(keys_by_source.items()):
        for key, data in stored_images(folder.fetch_root / source, keys).items():
            relative = save(data, key, report_dir, blur=key in blurred)
            if relative:
                made[key] = relative
    return made


def stored_images(fetch_dir: Path, keys: list[str]) -> dict[str, bytes]:
    try:
        return fetch.read_images(fetch_dir, keys)
    except KeyError:
        # Some have no stored image (a decode failure, a fetch store copied in part): take those there are,
        # one by one; only a bounded sample is ever asked for.
        found: dict[str, bytes] = {}
        for key in keys:
            try:
                found.update(fetch.read_images(fetch_dir, [key]))
            except KeyError:
                continue
        return found


def group(rows: list[dict], by: str) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        grouped[row[by]].append(row["key"])
    return dict(grouped)
