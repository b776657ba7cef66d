"""A finished run made in the test, in the layout ``curate.run`` writes, without Ray or a fetch.

Records of the opt-in source come from the real adapter over a store; a museum source
adds records that no revocation may touch. Shards are written with ``shards.write_shard``
in a layout the caller chooses, so a test knows which shards hold whose samples. Every
record with an image has an embedding in ``OUT/embeddings``, in parts that mix sources.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from curate import catalog, config, records, shards, stages, stats
from curate.io import write_parquet_atomic, write_text_atomic
from curate.optin.store import FILES, Store
from curate.runfolder import RunFolder
from curate.score import store as embeddings
from curate.sources import optin as optin_adapter

from .conftest import picture


def museum_rows(count: int) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    rows, images = [], {}
    for i in range(count):
        row = records.candidate("met", str(i), url=f"https://example.invalid/{i}.jpg", license="CC0-1.0",
                                license_field="isPublicDomain", license_value="true", creator="Demo Painter",
                                title=f"Study {i}")
        images[row["key"]] = picture(100 + i)
        rows.append(row)
    return rows, images


def optin_rows(store: Store) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    rows = list(optin_adapter.read(store.root, "optin", {}))
    images = {}
    for row in rows:
        data = (store.root / FILES / Path(row["url"]).name).read_bytes()
        images[row["key"]] = data
        row["sha256"] = hashlib.sha256(data).hexdigest()
    return rows, images


def finish_row(row: dict[str, Any], shard: str | None) -> dict[str, Any]:
    """What the later stages add, simply: the caption from the description or else the title."""
    row["caption"] = json.loads(row["meta"] or "{}").get("description") or row["title"]
    row["caption_origin"] = "metadata"
    row["attribution"] = f"{row['title'] or 'untitled'}, {row['source']}"
    row["width"], row["height"] = 64, 48
    if shard:
        row.update(status=records.KEPT, reason="", shard=shard)
    return row


EMBEDDING_PARTS = 3
MODELS = {"embedding": "open_clip:cleanroom-tiny-clip/random-init"}


def vector(key: str, dim: int = 8) -> np.ndarray:
    """The test embedding of a record: from its key alone, so a test can tell whose row it reads."""
    rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
    v = rng.standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float16)


def write_embeddings(out: Path, rows: list[dict[str, Any]], images: dict[str, bytes]) -> None:
    """Parts of every third key (as Ray batches mix sources), referenced from each row."""
    keys = sorted(k for k in images if k in {r["key"] for r in rows})
    by_key = {r["key"]: r for r in rows}
    for part in range(EMBEDDING_PARTS):
        chunk = sorted(keys[part::EMBEDDING_PARTS])
        if chunk:
            name = embeddings.write_part(RunFolder(out).embeddings, chunk, np.stack([vector(k) for k in chunk]))
            for row, key in enumerate(chunk):
                by_key[key].update({embeddings.FILE: name, embeddings.ROW: row})


def build_run(out: Path, store: Store, layout: dict[str, list[str]], rows: list[dict[str, Any]],
              images: dict[str, bytes], duplicates: list[str] = ()) -> None:
    """``layout``: shard name -> keys in it. Keys in ``duplicates`` end as exact duplicates; every
    other row not in a shard as rejected:min_side."""
    shard_of = {key: name for name, keys in layout.items() for key in keys}
    by_key = {r["key"]: r for r in rows}
    for row in rows:
        finish_row(row, shard_of.get(row["key"]))
        if row["key"] in duplicates:
            records.finish(row, records.DUPLICATE, "exact_sha256")
            row["duplicate_of"] = layout[next(iter(layout))][0]
        elif row["status"] == records.PENDING:
            records.finish(row, records.REJECTED, "min_side", "64 < 128")
    write_embeddings(out, rows, images)
    for name, keys in layout.items():
        shards.write_shard(out / "shards", name, [by_key[k] for k in keys], {k: images[k] for k in keys})
    shards.write_index(out / "shards", list(layout))
    table = records.to_table(sorted(rows, key=lambda r: r["key"]))
    write_parquet_atomic(table, out / "records" / "records.parquet")
    # Stage outputs as a run leaves them: records, and fetched image bytes under record_key.
    write_parquet_atomic(table, RunFolder(out).stage_dir("caption") / "part-0.parquet")
    fetched = pa.table({"record_key": list(images), "jpg": list(images.values())})
    write_parquet_atomic(fetched, out / "work" / "fetch" / "optin" / "images" / "00000.parquet")
    pipeline = out.parent / f"{out.name}-pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"name": "optin-test", "sources": [
        {"manifest": "met", "metadata": ["/dev/null"]}, {"manifest": "optin", "metadata": [str(store.root)]}]}))
    write_text_atomic(config.resolve(pipeline, {}).to_yaml(), out / "run.yaml")
    catalog.build(out)
    order = stages.run_order(stages.BUILT_IN)  # the default filters of the run.yaml above
    write_text_atomic(json.dumps({**stats.compute(out / "records", order), "models": MODELS}), out / stats.STATS)
    write_text_atomic("", out / "DONE")


def members(shards_dir: Path) -> dict[str, dict[str, bytes]]:
    """Sample key -> {extension: member bytes}, over every shard tar."""
    found: dict[str, dict[str, bytes]] = {}
    for tar_path in sorted(shards_dir.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                key, _, ext = member.name.partition(".")
                found.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return found
