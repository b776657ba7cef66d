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

Readers that must not hold a whole store (dedup at millions of rows) take ``parts`` and a
``Reader``, which numbers the rows of one or more stores in order and reads only the rows
asked for, in bounded spans with plain file reads: a memory map would count every page
touched in the process's RSS, and random rows touch most of the file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import duckdb
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


@dataclass(frozen=True)
class Part:
    vectors: Path
    metadata: Path
    rows: int
    dim: int
    offset: int  # where the first row starts in the .npy file, in bytes


def parts(root: Path) -> list[Part]:
    """Every complete part of the store, checked against its metadata, in a fixed order."""
    root = Path(root)
    metas = sorted((root / METADATA_DIR).glob("metadata_*.parquet"))
    if not metas:
        raise FileNotFoundError(f"{root}: no embeddings (no {METADATA_DIR}/metadata_*.parquet)")
    found: list[Part] = []
    for meta in metas:
        npy, _ = part_paths(root, meta.stem.removeprefix("metadata_"))
        rows = pq.ParquetFile(meta).metadata.num_rows
        header = np.load(npy, mmap_mode="r")  # reads the header only; no row is touched
        if header.ndim != 2 or len(header) != rows or header.dtype != np.float16:
            raise ValueError(f"{npy}: {header.dtype} {header.shape} is not float16 rows for the {rows} keys of {meta}")
        if found and header.shape[1] != found[0].dim:
            raise ValueError(f"{npy}: {header.shape[1]}-d embeddings in a store of {found[0].dim}-d ones")
        found.append(Part(npy, meta, rows, header.shape[1], header.offset))
        del header
    return found


class Reader:
    """The rows of ``parts`` (of one store or several) numbered in order, read on demand."""

    ROW_BYTES = np.dtype(np.float16).itemsize
    # A gap of fewer rows than this between two wanted rows is read through rather than
    # seeked over; a span is at most SPAN rows, which bounds the read buffer.
    GAP = 256
    SPAN = 32768

    def __init__(self, parts: list[Part]):
        if not parts:
            raise ValueError("no embedding parts to read")
        dims = {p.dim for p in parts}
        if len(dims) != 1:
            raise ValueError(f"embedding parts of different widths {sorted(dims)}: "
                             f"{', '.join(str(p.vectors) for p in parts[:3])} ...")
        self.parts = parts
        self.dim = parts[0].dim
        self.starts = np.cumsum([0] + [p.rows for p in parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """float16 (len(rows), dim): the given row numbers, in the order given."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float16)
        if len(rows) == 0:
            return out
        if rows.min() < 0 or rows.max() >= len(self):
            raise IndexError(f"embedding rows outside 0..{len(self) - 1}")
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        part_of = np.searchsorted(self.starts, wanted, side="right") - 1
        breaks = np.flatnonzero((np.diff(wanted) > self.GAP) | (np.diff(part_of) != 0)
                                | (np.diff(wanted // self.SPAN) != 0)) + 1
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(wanted)]):
            part = self.parts[part_of[lo]]
            first, last = wanted[lo] - self.starts[part_of[lo]], wanted[hi - 1] - self.starts[part_of[lo]]
            out[order[lo:hi]] = self._read(part, first, last + 1)[wanted[lo:hi] - wanted[lo]]
        return out

    def _read(self, part: Part, start: int, stop: int) -> np.ndarray:
        with open(part.vectors, "rb") as f:
            f.seek(part.offset + start * part.dim * self.ROW_BYTES)
            block = np.fromfile(f, dtype=np.float16, count=(stop - start) * part.dim)
        if len(block) != (stop - start) * part.dim:
            raise ValueError(f"{part.vectors}: rows {start}..{stop} cut short (a truncated file?)")
        return block.reshape(stop - start, part.dim)


def read_located(root: Path, files: list[str], rows: list[int]) -> np.ndarray:
    """float16 (len(files), dim): the embedding at each (``embedding_file``, ``embedding_row``) of a batch.

    Reads only the rows asked for, one part file at a time; no metadata or other part is read.
    """
    root = Path(root)
    by_file: dict[str, list[int]] = {}
    for i, name in enumerate(files):
        by_file.setdefault(name, []).append(i)
    out: np.ndarray | None = None
    for name, where in sorted(by_file.items()):
        header = np.load(root / name, mmap_mode="r")  # the header only: shape and where the rows start
        if header.ndim != 2 or header.dtype != np.float16:
            raise ValueError(f"{root / name}: {header.dtype} {header.shape} is not a float16 embedding matrix")
        part = Part(root / name, root / name, len(header), header.shape[1], header.offset)
        del header
        if out is None:
            out = np.empty((len(files), part.dim), dtype=np.float16)
        out[where] = Reader([part]).gather(np.array([rows[i] for i in where], dtype=np.int64))
    return out if out is not None else np.empty((0, 0), dtype=np.float16)


def register_keys(con: duckdb.DuckDBPyConnection, parts: list[Part], table: str, first_row: int = 0) -> None:
    """Create the DuckDB table ``table`` (key, row): each stored key and its row in a ``Reader`` over
    ``parts``, rows numbered from ``first_row`` (where these parts start among several stores).

    A key stored twice is an error, as in ``load``.
    """
    starts = np.cumsum([0] + [p.rows for p in parts])[:-1] + first_row
    con.register("store_parts", pa.table({"file": [str(p.metadata) for p in parts], "start": starts}))
    con.execute(f"CREATE TABLE {table} AS SELECT m.key, p.start + m.file_row_number AS row "
                f"FROM read_parquet(?, filename=true, file_row_number=true) m "
                f"JOIN store_parts p ON m.filename = p.file", [[str(p.metadata) for p in parts]])
    con.unregister("store_parts")
    twice = con.execute(f"SELECT key FROM {table} GROUP BY key HAVING count(*) > 1 LIMIT 3").fetchall()
    if twice:
        raise ValueError(f"{parts[0].metadata.parent.parent}: a key is stored in more than one part, e.g. "
                         f"{[k for (k,) in twice]} (a store holds one embedding per record; was it written twice "
                         f"into the same folder?)")


def load(root: Path, keys: Iterable[str] | None = None) -> Embeddings:
    """Every complete part of the store, or only ``keys`` in the order given (KeyError if one is missing).

    Holds the whole store (or every key asked for) in memory: for small stores and reports.
    """
    found = parts(root)
    all_keys: list[str] = []
    for part in found:
        all_keys.extend(pq.read_table(part.metadata, columns=["key"])["key"].to_pylist())
    index = {k: i for i, k in enumerate(all_keys)}
    if len(index) != len(all_keys):
        raise ValueError(f"{root}: a key is stored in more than one part (a store holds one embedding per "
                         f"record; was it written twice into the same folder?)")
    reader = Reader(found)
    if keys is None:
        return Embeddings(all_keys, reader.gather(np.arange(len(reader))))
    wanted = list(keys)
    missing = [k for k in wanted if k not in index]
    if missing:
        raise KeyError(f"{root}: no embedding for {len(missing)} of {len(wanted)} keys, e.g. {missing[:3]}")
    return Embeddings(wanted, reader.gather(np.array([index[k] for k in wanted], dtype=np.int64)))
