"""Webdataset shards: ``KEY.jpg``, ``KEY.txt``, ``KEY.json`` per sample, a parquet per shard.

Shard membership is decided up front from the sorted keys (``assign``), so a shard's
content never depends on timing and an interrupted run rewrites exactly the shards it
had not finished. Each shard is written atomically: the tar first, then its parquet,
whose presence marks the shard complete. ``index.json`` is written last, after every
shard. Tar members get fixed metadata so the same samples give byte-identical tars.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curate import stages
from curate.io import atomic_path, write_parquet_atomic, write_text_atomic

stages.declare("shards", kept={"": "written to a shard"})

INDEX = "index.json"
TAR_SHA256 = "cleanroom.tar_sha256"  # parquet footer key: the sha256 of the shard's tar
_MTIME = 946684800  # 2000-01-01: fixed so that rewriting a shard gives the same bytes
# Fixed, not inferred from the rows: a shard whose samples all lack a value (consent_id,
# date, ...) would otherwise type that column null, and DuckDB, which takes the first
# file's schema, could not read a later shard that has one. Same order as sample_json.
SAMPLE_SCHEMA = pa.schema([
    *((name, pa.string()) for name in ("key", "source", "source_id", "url", "page_url", "license", "license_url",
                                       "license_evidence", "creator", "title", "date", "attribution", "consent_id",
                                       "sha256")),
    *((name, pa.int64()) for name in ("original_width", "original_height", "stored_width", "stored_height")),
    *((name, pa.string()) for name in ("caption", "caption_origin", "captions")),
    *((name, pa.float64()) for name in ("caption_clip_similarity", "aesthetic", "pwatermark", "pnsfw")),
    ("shard", pa.string()),
])


SHARD_FORMAT = "shard-%05d"  # printf syntax, so DuckDB names shards the same way (curate.run assigns them)


def shard_name(number: int) -> str:
    return SHARD_FORMAT % number


def assign(keys: Iterable[str], samples_per_shard: int) -> pa.Table:
    ordered = sorted(keys)
    return pa.table({"key": ordered,
                     "shard": [shard_name(i // samples_per_shard) for i in range(len(ordered))]})


def is_complete(shards_dir: Path, name: str) -> bool:
    return (shards_dir / f"{name}.parquet").exists() and (shards_dir / f"{name}.tar").exists()


def sample_json(row: dict[str, Any], stored: tuple[int, int]) -> dict[str, Any]:
    """The provenance a trainer or an auditor needs, without looking anything up."""
    return {
        "key": row["key"], "source": row["source"], "source_id": row["source_id"],
        "url": row["url"], "page_url": row["page_url"],
        "license": row["license"], "license_url": row["license_url"],
        # The piece the license was read from, and every piece the verdict weighed.
        "license_evidence": {"field": row["license_field"], "value": row["license_value"],
                             "pieces": json.loads(row["license_evidence"]) if row.get("license_evidence") else []},
        "creator": row["creator"], "title": row["title"], "date": row["date"],
        "attribution": row["attribution"], "consent_id": row["consent_id"],
        # The original's size (as displayed, before resize) and the size of KEY.jpg in this shard.
        "sha256": row["sha256"], "original_width": row["original_width"], "original_height": row["original_height"],
        "stored_width": stored[0], "stored_height": stored[1],
        "caption": row["caption"], "caption_origin": row["caption_origin"],
        "captions": json.loads(row["captions"]) if row.get("captions") else [],
        "caption_clip_similarity": row.get("caption_clip_similarity"),
        "aesthetic": row.get("aesthetic"), "pwatermark": row.get("pwatermark"), "pnsfw": row.get("pnsfw"),
    }


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = len(payload), _MTIME, 0o644, "cleanroom", "cleanroom"
    tar.addfile(info, io.BytesIO(payload))


def write_shard(shards_dir: Path, name: str, rows: list[dict[str, Any]], images: dict[str, bytes]) -> pa.Table:
    """Write one shard (tar, then parquet); returns the shard's per-sample table."""
    missing = [r["key"] for r in rows if r["key"] not in images]
    if missing:
        raise ValueError(f"shard {name}: no fetched image bytes for records {missing[:5]}")
    entries = []
    with atomic_path(shards_dir / f"{name}.tar") as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for row in sorted(rows, key=lambda r: r["key"]):
                image = images[row["key"]]
                meta = sample_json(row, Image.open(io.BytesIO(image)).size)
                _add(tar, f"{row['key']}.jpg", image)
                _add(tar, f"{row['key']}.txt", (row["caption"] or "").encode())
                _add(tar, f"{row['key']}.json", json.dumps(meta, ensure_ascii=False, sort_keys=True).encode())
                entries.append({**meta, "license_evidence": json.dumps(meta["license_evidence"]),
                                "captions": json.dumps(meta["captions"], ensure_ascii=False), "shard": name})
    # The tar's digest rides in the parquet footer, so the index is made without reading a tar again.
    digest = {TAR_SHA256: _sha256(shards_dir / f"{name}.tar")}
    table = pa.Table.from_pylist(entries, schema=SAMPLE_SCHEMA.with_metadata(digest))
    write_parquet_atomic(table, shards_dir / f"{name}.parquet")
    return table


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_index(shards_dir: Path, names: list[str]) -> dict[str, Any]:
    """index.json from each shard's parquet footer: samples, and the tar's size and sha256."""
    shards = []
    for name in names:
        tar, footer = shards_dir / f"{name}.tar", pq.read_metadata(shards_dir / f"{name}.parquet")
        digest = (footer.metadata or {}).get(TAR_SHA256.encode())
        shards.append({"tar": tar.name, "parquet": f"{name}.parquet", "samples": footer.num_rows,
                       "bytes": tar.stat().st_size, "sha256": digest.decode() if digest else _sha256(tar)})
    index = {"shards": shards, "samples": sum(s["samples"] for s in shards)}
    write_text_atomic(json.dumps(index, indent=2), shards_dir / INDEX)
    return index
