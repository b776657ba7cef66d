"""Embedding files: float16 .npy matrices row-aligned with parquet metadata, as clip-retrieval lays them out.

Layout of a store (``OUT/embeddings`` in a run)::

    img_emb/img_emb_<part>.npy          float16 (rows, dim), each row L2-normalised
    metadata/metadata_<part>.parquet    ``key`` of each row, in the same order

so embedding-reader / autofaiss read it as ``parquet_npy`` and numpy memory-maps it. A
record refers to its embedding by ``embedding_file`` (relative to the store) and
``embedding_row``.

Why float16: half the disk and memory of float32, and the rounding (about 1e-3 relative)
is far below any dedup threshold or head's sensitivity. Why content-derived part names
(a hash of the part's keys): a retried Ray task rewrites the same two files instead of
adding a second copy of its rows. Each file is written to a temporary name and renamed;
the metadata file is written last, so a part without it is incomplete and ignored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate import records
from curate.io import atomic_path, write_parquet_atomic
from curate.score import embed

VECTORS_DIR = "img_emb"
METADATA_DIR = "metadata"
FILE = "embedding_file"
ROW = "embedding_row"


def part_paths(root: Path, part: str) -> tuple[Path, Path]:
    return root / VECTORS_DIR / f"img_emb_{part}.npy", root / METADATA_DIR / f"metadata_{part}.parquet"


def write_part(root: Path, keys: list[str], vectors: np.ndarray) -> str:
    """Write one part (rows sorted by key); returns its vectors file, relative to ``root``."""
    order = sorted(range(len(keys)), key=keys.__getitem__)
    keys = [keys[i] for i in order]
    part = hashlib.sha1("\n".join(keys).encode()).hexdigest()[:16]
    npy, meta = part_paths(Path(root), part)
    with atomic_path(npy) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(vectors, dtype=np.float32)[order].astype(np.float16))
    write_parquet_atomic(pa.table({"key": pa.array(keys, pa.string())}), meta)
    return f"{VECTORS_DIR}/{npy.name}"


class EmbeddingWriter:
    """Stage: store the batch's embeddings; replaces ``embedding`` by ``embedding_file`` + ``embedding_row``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows, vectors = embed.matrix(batch)
        files: list[str | None] = [None] * batch.num_rows
        positions: list[int | None] = [None] * batch.num_rows
        if rows:
            keys = batch["key"].to_pylist()
            name = write_part(self.root, [keys[i] for i in rows], vectors)
            for place, i in enumerate(sorted(rows, key=keys.__getitem__)):
                files[i], positions[i] = name, place
        batch = batch.drop_columns([embed.EMBEDDING])
        batch = records.put_column(batch, FILE, pa.array(files, pa.string()))
        return records.put_column(batch, ROW, pa.array(positions, pa.int32()))


@dataclass
class Embeddings:
    keys: list[str]
    vectors: np.ndarray  # float16 (len(keys), dim)


def load(root: Path, keys: Iterable[str] | None = None) -> Embeddings:
    """Every complete part of the store, or only ``keys`` in the order given (KeyError if one is missing)."""
    root = Path(root)
    metas = sorted((root / METADATA_DIR).glob("metadata_*.parquet"))
    if not metas:
        raise FileNotFoundError(f"{root}: no embeddings (no {METADATA_DIR}/metadata_*.parquet)")
    all_keys: list[str] = []
    blocks = []
    for meta in metas:
        part = meta.stem.removeprefix("metadata_")
        npy, _ = part_paths(root, part)
        part_keys = pq.read_table(meta, columns=["key"])["key"].to_pylist()
        vectors = np.load(npy)
        if vectors.ndim != 2 or len(vectors) != len(part_keys):
            raise ValueError(f"{npy}: shape {vectors.shape} does not match the {len(part_keys)} keys of {meta}")
        if blocks and vectors.shape[1] != blocks[0].shape[1]:
            raise ValueError(f"{npy}: {vectors.shape[1]}-d embeddings in a store of {blocks[0].shape[1]}-d ones")
        all_keys.extend(part_keys)
        blocks.append(vectors)
    stored = Embeddings(all_keys, np.concatenate(blocks))
    index = {k: i for i, k in enumerate(stored.keys)}
    if len(index) != len(stored.keys):
        raise ValueError(f"{root}: a key is stored in more than one part (a store holds one embedding per "
                         f"record; was it written twice into the same folder?)")
    if keys is None:
        return stored
    wanted = list(keys)
    missing = [k for k in wanted if k not in index]
    if missing:
        raise KeyError(f"{root}: no embedding for {len(missing)} of {len(wanted)} keys, e.g. {missing[:3]}")
    return Embeddings(wanted, stored.vectors[[index[k] for k in wanted]])
