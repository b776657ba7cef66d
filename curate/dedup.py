"""Deduplication: exact (sha256), perceptual (pHash) and semantic (CLIP embeddings).

The keep policy decides which member of a duplicate group survives, in this order:
the license the policy prefers (e.g. CC0 before "public domain" with no mark), then the
larger image, then the source listed first in the pipeline, then the key (so the choice
never depends on row order). ``keep_positions`` is that order, the one definition every
dedup uses; a record kept by an earlier run comes before all of them, because it is
already in shards and is not decided again.

Dedup is a global step: each ``*_decisions`` function reads what it needs (the run's
parquet, the embedding store) and returns a decisions table (``key``, ``duplicate_of``,
``reason``, ``detail``); ``ApplyDuplicates`` is the per-batch stage that marks the losers.
The three run in order, each over the records the previous left pending: exact, then
pHash, then CLIP, so a loser points at the record it lost to at its own step.

Near-duplicate groups are the connected components of the "near" graph (pHash within a
Hamming distance; CLIP cosine above a threshold), found with faiss and scipy: two copies
linked through a third are one group even if they are not near each other directly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from curate import records
from curate.score import images, store

DECISIONS = pa.schema([pa.field("key", pa.string()), pa.field("duplicate_of", pa.string()),
                       pa.field("reason", pa.string()), pa.field("detail", pa.string())])
PHASH = "phash"
# Columns the keep order reads, and the flag of records kept by an earlier run.
ORDER_COLUMNS = ("key", "license", "original_width", "original_height", "source")
EARLIER = "earlier"
EARLIER_RUN = "earlier_run"


# ---------------------------------------------------------------- config


class PHashDedup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Bits (of 64) in which two pHashes may differ and still be one image; re-encodes and
    # resizes stay within a few bits, distinct images differ in about 32.
    max_distance: int = Field(6, ge=0, le=32)


class PriorRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: str  # an earlier run's OUT folder: its records/*.parquet and embeddings/ are read


class ClipDedup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.95, gt=0, lt=1)  # cosine above which two images are one
    # k-means lists (None: about 2 * sqrt(records)) and the nearest lists each record is
    # compared in; below ``exact_below`` records every pair is compared.
    nlist: int | None = Field(None, ge=1)
    nprobe: int = Field(4, ge=1)
    exact_below: int = Field(10_000, ge=0)
    seed: int = 0
    against: list[PriorRun] = Field(default_factory=list)  # earlier runs whose kept records stay kept


class NearDedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phash: PHashDedup | None = None
    clip: ClipDedup | None = None


# ---------------------------------------------------------------- keep policy


def keep_positions(candidates: pa.Table, license_rank: dict[str, int], source_priority: dict[str, int]) -> np.ndarray:
    """Each row's place in the keep order (0 survives first); needs ORDER_COLUMNS, optional ``earlier``."""
    n = candidates.num_rows
    after_ranked = max(license_rank.values(), default=-1) + 1
    after_listed = max(source_priority.values(), default=-1) + 1
    width = candidates["original_width"].to_numpy(zero_copy_only=False)
    height = candidates["original_height"].to_numpy(zero_copy_only=False)
    area = np.nan_to_num(width.astype(np.float64) * height, nan=-1).astype(np.int64)  # unknown size last
    earlier = (candidates[EARLIER].to_numpy(zero_copy_only=False) if EARLIER in candidates.column_names
               else np.zeros(n, dtype=bool))
    table = pa.table({
        EARLIER: pa.array(earlier.astype(np.int8)),
        "license_rank": pa.array([license_rank.get(x, after_ranked) for x in candidates["license"].to_pylist()]),
        "area": pa.array(area),
        "priority": pa.array([source_priority.get(x, after_listed) for x in candidates["source"].to_pylist()]),
        "key": candidates["key"],
    })
    order = pc.sort_indices(table, sort_keys=[(EARLIER, "descending"), ("license_rank", "ascending"),
                                              ("area", "descending"), ("priority", "ascending"),
                                              ("key", "ascending")]).to_numpy()
    positions = np.empty(n, dtype=np.int64)
    positions[order] = np.arange(n)
    return positions


def decide(candidates: pa.Table, group: np.ndarray, positions: np.ndarray, reason: str,
           detail: Callable[[int, int], str]) -> pa.Table:
    """Decisions for every group member but the first in keep order; ``detail(loser, kept)`` by row index.

    Records kept by an earlier run are never decided again, only pointed at.
    """
    if candidates.num_rows == 0:
        return empty_decisions()
    order = np.lexsort((positions, group))
    sorted_group = group[order]
    first = np.r_[True, sorted_group[1:] != sorted_group[:-1]]
    kept = order[np.flatnonzero(first)[np.cumsum(first) - 1]]
    losers, winners = order[~first], kept[~first]
    if EARLIER in candidates.column_names:
        new = ~candidates[EARLIER].to_numpy(zero_copy_only=False)[losers]
        losers, winners = losers[new], winners[new]
    keys = candidates["key"].to_pylist()
    table = pa.table({"key": [keys[i] for i in losers], "duplicate_of": [keys[i] for i in winners],
                      "reason": [reason] * len(losers), "detail": [detail(i, j) for i, j in zip(losers, winners)]},
                     schema=DECISIONS)
    return table.sort_by("key")


def empty_decisions() -> pa.Table:
    return DECISIONS.empty_table()


# ---------------------------------------------------------------- exact


def exact_decisions(parquet_glob: str, license_rank: dict[str, int], source_priority: dict[str, int]) -> pa.Table:
    """Decisions for every pending record whose sha256 an earlier-ranked record shares."""
    candidates = duckdb.sql(
        f"SELECT {', '.join(ORDER_COLUMNS)}, sha256 FROM read_parquet(?) "
        f"WHERE status = '{records.PENDING}' AND sha256 IS NOT NULL", params=[parquet_glob]).to_arrow_table()
    group = pc.dictionary_encode(candidates["sha256"]).combine_chunks().indices.to_numpy()
    keys = candidates["key"].to_pylist()
    return decide(candidates, group, keep_positions(candidates, license_rank, source_priority), "exact_sha256",
                  lambda i, j: f"same original bytes as {keys[j]}")


# ---------------------------------------------------------------- perceptual


def add_phash(batch: pa.Table) -> pa.Table:
    """Stage: ``jpg`` -> ``phash``, the 64-bit DCT hash as 16 hex digits (null where no image or it failed)."""
    import imagehash

    batch, rows, pictures = images.decode(batch, "score", "perceptual hash")
    hashes: list[str | None] = [None] * batch.num_rows
    for i, picture in zip(rows, pictures):
        hashes[i] = str(imagehash.phash(picture))
    return records.put_column(batch, PHASH, pa.array(hashes, pa.string()))


def _phash_codes(candidates: pa.Table) -> np.ndarray:
    hexes = candidates[PHASH].to_pylist()
    bad = [k for k, h in zip(candidates["key"].to_pylist(), hexes) if h is None or len(h) != 16]
    if bad:
        raise ValueError(f"records without a 64-bit phash (16 hex digits): {bad[:5]}")
    return np.frombuffer(bytes.fromhex("".join(hexes)), dtype=np.uint8).reshape(len(hexes), 8)


def phash_pairs(codes: np.ndarray, max_distance: int, chunk: int = 16384) -> np.ndarray:
    """(i, j) with i < j for every two codes within ``max_distance`` bits: an exact faiss range search."""
    import faiss

    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    pairs = []
    for start in range(0, len(codes), chunk):
        # faiss keeps binary neighbours at distance < radius.
        lims, _, found = index.range_search(codes[start:start + chunk], max_distance + 1)
        pairs.append(_upper_pairs(lims, found, start))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)


def phash_decisions(candidates: pa.Table, license_rank: dict[str, int], source_priority: dict[str, int],
                    config: PHashDedup) -> pa.Table:
    """Decisions for pending records whose pHash is within ``max_distance`` bits of a better-ranked one."""
    codes = _phash_codes(candidates)
    group = components(candidates.num_rows, phash_pairs(codes, config.max_distance))
    keys = candidates["key"].to_pylist()

    def detail(i: int, j: int) -> str:
        bits = int(np.unpackbits(codes[i] ^ codes[j]).sum())
        return f"pHash {bits} bits from {keys[j]} (group linked at <= {config.max_distance})"

    return decide(candidates, group, keep_positions(candidates, license_rank, source_priority),
                  "near_duplicate_phash", detail)


# ---------------------------------------------------------------- semantic


def similar_pairs(vectors: np.ndarray, config: ClipDedup) -> np.ndarray:
    """(i, j) with i < j for every two L2-normalised vectors with cosine above ``config.threshold``.

    Below ``exact_below`` rows every pair is compared. Above, k-means (faiss) splits the vectors
    into ``nlist`` lists; each vector is compared with the members of its ``nprobe`` nearest
    lists, so a pair is found when one's list is among the other's nearest -- near-duplicates
    almost always share a list. The comparisons are matrix products per list (BLAS): on these
    cores about 6x faster than faiss' IVF range search, which scans list members one by one.
    """
    lists = _probe_lists(vectors, config)
    nlist = int(lists.max()) + 1
    members, member_bounds = _grouped(lists[:, 0], nlist)  # a vector is a member of its nearest list
    probes, probe_bounds = _grouped(lists.ravel(), nlist)
    probes //= lists.shape[1]  # position in the flattened (n, nprobe) array -> vector
    pairs = [_pairs_above(vectors, probes[probe_bounds[c]:probe_bounds[c + 1]],
                          members[member_bounds[c]:member_bounds[c + 1]], config.threshold) for c in range(nlist)]
    return np.unique(np.concatenate(pairs), axis=0)


def _probe_lists(vectors: np.ndarray, config: ClipDedup, chunk: int = 65536) -> np.ndarray:
    """(n, nprobe) k-means list ids of each vector, nearest first; one list of all when n < exact_below."""
    import faiss

    n, dim = vectors.shape
    if n < config.exact_below:
        return np.zeros((n, 1), dtype=np.int64)
    nlist = config.nlist or max(1, int(2 * math.sqrt(n)))
    # 64 points per list place the centroids well enough (faiss asks for >= 39) and keep
    # training to a minute at a million vectors; spherical: centroids on the unit sphere.
    kmeans = faiss.Kmeans(dim, nlist, niter=10, seed=config.seed, spherical=True, max_points_per_centroid=64)
    sample = np.random.default_rng(config.seed).choice(n, size=min(n, 64 * nlist), replace=False)
    kmeans.train(np.ascontiguousarray(vectors[np.sort(sample)], dtype=np.float32))
    nprobe = min(config.nprobe, nlist)
    return np.concatenate([kmeans.index.search(np.ascontiguousarray(vectors[s:s + chunk], dtype=np.float32),
                                               nprobe)[1] for s in range(0, n, chunk)])


def _grouped(labels: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions sorted by label, and where each label's run starts (``groups + 1`` bounds)."""
    order = np.argsort(labels, kind="stable")
    return order, np.searchsorted(labels[order], np.arange(groups + 1))


def _pairs_above(vectors: np.ndarray, queries: np.ndarray, members: np.ndarray, threshold: float,
                 block: int = 1 << 24) -> np.ndarray:
    """(min, max) index pairs of queries x members with inner product above ``threshold``, self excluded."""
    found = [np.zeros((0, 2), dtype=np.int64)]
    if len(members) == 0:
        return found[0]
    m = vectors[members].astype(np.float32)
    step = max(1, block // len(members))  # bounds the similarity block to ``block`` floats
    for start in range(0, len(queries), step):
        q = queries[start:start + step]
        rows, cols = np.nonzero(vectors[q].astype(np.float32) @ m.T > threshold)
        a, b = q[rows], members[cols]
        keep = a != b
        found.append(np.stack([np.minimum(a, b)[keep], np.maximum(a, b)[keep]], axis=1).astype(np.int64))
    return np.concatenate(found)


def semantic_decisions(candidates: pa.Table, vectors: np.ndarray, license_rank: dict[str, int],
                       source_priority: dict[str, int], config: ClipDedup) -> pa.Table:
    """Decisions for records whose CLIP embedding is near a better-ranked (or earlier-kept) one's.

    ``vectors`` are row-aligned with ``candidates``; rows flagged ``earlier`` (see ``load_prior``)
    win every group they are in and are not decided themselves.
    """
    if len(vectors) != candidates.num_rows:
        raise ValueError(f"semantic dedup: {len(vectors)} embeddings for {candidates.num_rows} records")
    group = components(candidates.num_rows, similar_pairs(vectors, config))
    keys = candidates["key"].to_pylist()
    runs = candidates[EARLIER_RUN].to_pylist() if EARLIER_RUN in candidates.column_names else [None] * len(keys)

    def detail(i: int, j: int) -> str:
        cosine = float(np.dot(vectors[i].astype(np.float32), vectors[j].astype(np.float32)))
        where = f" kept by the earlier run {runs[j]}" if runs[j] else ""
        return f"CLIP cosine {cosine:.3f} to {keys[j]}{where} (group linked at > {config.threshold})"

    return decide(candidates, group, keep_positions(candidates, license_rank, source_priority),
                  "near_duplicate_clip", detail)


def _upper_pairs(lims: np.ndarray, found: np.ndarray, offset: int) -> np.ndarray:
    """Range-search results of queries ``offset..`` as (i, j) pairs with i < j (drops self and mirror)."""
    queries = offset + np.repeat(np.arange(len(lims) - 1), np.diff(lims.astype(np.int64)))
    keep = found > queries
    return np.stack([queries[keep], found[keep]], axis=1).astype(np.int64)


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes linked by ``pairs`` (union-find, in scipy's C)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


# ---------------------------------------------------------------- across runs


def load_prior(runs: list[PriorRun]) -> tuple[pa.Table, np.ndarray]:
    """Kept records (ORDER_COLUMNS, ``earlier``, ``earlier_run``) of one or more earlier runs, and their embeddings."""
    from curate.runfolder import RunFolder  # runfolder reads the config, which holds NearDedupConfig

    tables, vectors = [], []
    for run in runs:
        folder = RunFolder.at(run.out)
        if not folder.has_records():
            raise FileNotFoundError(f"{folder.records}: no records of an earlier run "
                                    f"(is {folder.root} a finished run?)")
        kept = duckdb.sql(f"SELECT {', '.join(ORDER_COLUMNS)} FROM read_parquet(?) WHERE status = ? ORDER BY key",
                          params=[str(folder.records / "*.parquet"), records.KEPT]).to_arrow_table()
        vectors.append(store.load(folder.embeddings, kept["key"].to_pylist()).vectors)
        tables.append(kept.append_column(EARLIER, pa.array(np.ones(kept.num_rows, dtype=bool)))
                      .append_column(EARLIER_RUN, pa.array([str(folder.root)] * kept.num_rows, pa.string())))
    return pa.concat_tables(tables), np.concatenate(vectors)


# ---------------------------------------------------------------- the run's near dedup


def near_decisions(parquet_glob: str, embeddings: Path | None, license_rank: dict[str, int],
                   source_priority: dict[str, int], config: NearDedupConfig, decided: pa.Table) -> pa.Table:
    """pHash then CLIP decisions over the pending records ``decided`` (exact dedup's decisions) left.

    ``parquet_glob``: the scored records (with ``phash`` when pHash dedup is on); ``embeddings``:
    the run's embedding store (needed when CLIP dedup is on).
    """
    columns = [*ORDER_COLUMNS, *([PHASH] if config.phash else [])]
    con = duckdb.connect()
    con.register("decided", decided.select(["key"]))
    candidates = con.sql(
        f"SELECT {', '.join('r.' + c for c in columns)} FROM read_parquet(?) r ANTI JOIN decided d USING (key) "
        f"WHERE r.status = '{records.PENDING}' ORDER BY r.key", params=[parquet_glob]).to_arrow_table()
    found = []
    if config.phash:
        found.append(phash_decisions(candidates, license_rank, source_priority, config.phash))
        candidates = candidates.filter(pc.invert(pc.is_in(candidates["key"], found[-1]["key"])))
    if config.clip and candidates.num_rows:
        if embeddings is None:
            raise ValueError("CLIP dedup needs the run's embeddings: turn on scoring")
        vectors = store.load(embeddings, candidates["key"].to_pylist()).vectors
        if config.clip.against:
            prior, prior_vectors = load_prior(config.clip.against)
            if prior_vectors.shape[1] != vectors.shape[1]:
                raise ValueError(f"earlier runs' embeddings are {prior_vectors.shape[1]}-d, this run's are "
                                 f"{vectors.shape[1]}-d: dedup across runs needs the same embedder")
            candidates = pa.concat_tables([candidates.select(list(ORDER_COLUMNS)).append_column(
                EARLIER, pa.array(np.zeros(candidates.num_rows, dtype=bool))).append_column(
                EARLIER_RUN, pa.nulls(candidates.num_rows, pa.string())), prior])
            vectors = np.concatenate([vectors, prior_vectors])
        found.append(semantic_decisions(candidates, vectors, license_rank, source_priority, config.clip))
    return pa.concat_tables(found) if found else empty_decisions()


# ---------------------------------------------------------------- apply


class ApplyDuplicates:
    """Mark pending records that lost their duplicate group as ``duplicate`` of the survivor."""

    def __init__(self, decisions: pa.Table):
        kept = decisions["duplicate_of"].to_pylist()
        if "reason" not in decisions.column_names:  # exact dedup's older (key, duplicate_of) form
            decisions = decisions.append_column("reason", pa.array(["exact_sha256"] * len(kept))).append_column(
                "detail", pa.array([f"same original bytes as {k}" for k in kept]))
        self.decided = {key: decision for key, *decision in zip(
            decisions["key"].to_pylist(), kept, decisions["reason"].to_pylist(), decisions["detail"].to_pylist())}

    def __call__(self, table: pa.Table) -> pa.Table:
        table = records.conform(table)
        rows = table.to_pylist()
        for row in rows:
            decision = self.decided.get(row["key"])
            if decision and row["status"] == records.PENDING:
                kept, reason, detail = decision
                row["duplicate_of"] = kept
                records.finish(row, records.DUPLICATE, reason, detail)
        return pa.Table.from_pylist(rows, schema=table.schema)
