"""Deduplication: exact (sha256), perceptual (pHash) and semantic (CLIP embeddings).

The keep policy decides which member of a duplicate group survives, in this order:
the license the policy prefers (e.g. CC0 before "public domain" with no mark), then the
larger image, then the source listed first in the pipeline, then the key (so the choice
never depends on row order). ``KEEP_ORDER`` is that order, the one definition every
dedup uses (a DuckDB ``ORDER BY``, so it sorts a run of any size out of core); a record
kept by an earlier run comes before all of them, because it is already in shards and is
not decided again.

Dedup is a global step: each ``*_decisions`` function reads what it needs (the run's
parquet, the embedding store) and returns a decisions table (``key``, ``duplicate_of``,
``reason``, ``detail``), one row per loser; ``join_decisions`` puts each beside its record
and ``ApplyDuplicates`` is the per-batch stage that marks them. The three run in order,
each over the records the previous left pending: exact, then pHash, then CLIP, so a loser
points at the record it lost to at its own step.

Near-duplicate groups are the connected components of the "near" graph (pHash within a
Hamming distance; CLIP cosine above a threshold): two copies linked through a third are
one group even if they are not near each other directly. Records are numbered by their
place in the keep order, so a group's survivor is its smallest number. Nothing holds a
run's records as Python objects: the records stay in DuckDB (spilling to a temporary
folder), the near graph is found with multi-index hashing (pHash) and k-means lists
(CLIP, vectors read from the store in bounded groups of lists), and only the pairs found
and the integers that number the records are held in memory.
"""

from __future__ import annotations

import collections
import itertools
import math
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from curate import records, stages
from curate.score import images, store

DECISIONS = pa.schema([pa.field("key", pa.string()), pa.field("duplicate_of", pa.string()),
                       pa.field("reason", pa.string()), pa.field("detail", pa.string())])
PHASH = "phash"
# Columns the keep order reads, and the flag of records kept by an earlier run.
ORDER_COLUMNS = ("key", "license", "original_width", "original_height", "source")
EARLIER = "earlier"
EARLIER_RUN = "earlier_run"
# Over a table ``c`` of ORDER_COLUMNS + ``earlier`` joined with ``l`` (license ranks) and
# ``p`` (source priorities): an unranked license, unknown size or unlisted source comes last.
KEEP_ORDER = ("c.earlier DESC, l.rank ASC NULLS LAST, c.original_width::BIGINT * c.original_height DESC NULLS LAST, "
              "p.priority ASC NULLS LAST, c.key")
# DuckDB's share of memory before it spills to its temporary folder: dedup's tables hold a
# run's records, which outgrow any fixed share of a machine.
DUCKDB_MEMORY = "1GB"

stages.declare("dedup", duplicate={
    "exact_sha256": "the same original bytes as a better-ranked record",
    "near_duplicate_phash": "a pHash within max_distance bits of a better-ranked record's (or linked to one)",
    "near_duplicate_clip": "a CLIP embedding above the cosine threshold to a better-ranked or earlier-kept "
                           "record's (or linked to one)"})


# ---------------------------------------------------------------- config


class PHashDedup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Re-encodes and resizes stay within a few bits, distinct images differ in about 32.
    max_distance: int = Field(6, ge=0, le=32, description=(
        "Bits (of 64) in which two pHashes may differ and still be one image."))


class PriorRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: str = Field(description=(
        "An earlier run's OUT folder (relative to the pipeline file): its records and embeddings are read."))


class ClipDedup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.95, gt=0, lt=1, description="Cosine similarity above which two images are one.")
    nlist: int | None = Field(None, ge=1, description="k-means lists of the index; none: about 2 * sqrt(records).")
    # At 2.5M planted-pair vectors, 4 lists found 24,999 of 25,000 pairs and 8 found all, for 20% more CPU.
    nprobe: int = Field(8, ge=1, description="The nearest lists each record is compared in.")
    exact_below: int = Field(10_000, ge=0, description="Below this many records, every pair is compared.")
    seed: int = Field(0, description="Seed of the k-means clustering and its sample.")
    # It bounds the step's memory whatever the run's size.
    max_vectors: int = Field(2_000_000, ge=1_000, description=(
        "Embeddings read into memory at once (about max_vectors x dim x 2 bytes, plus a float32 copy of one list)."))
    against: list[PriorRun] = Field(default_factory=list, description=(
        "Earlier runs whose kept records stay kept: this run's near duplicates of them go."))


class NearDedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phash: PHashDedup | None = Field(None, description="Perceptual-hash dedup; none: off.")
    clip: ClipDedup | None = Field(None, description="CLIP-embedding dedup (faiss); none: off.")


# ---------------------------------------------------------------- keep policy


@contextmanager
def _connection() -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB database in a temporary folder, so the tables of a large run spill to disk."""
    with tempfile.TemporaryDirectory(prefix="cleanroom-dedup-") as folder:
        con = duckdb.connect(str(Path(folder) / "dedup.duckdb"))
        try:
            con.execute("SET memory_limit = ?", [DUCKDB_MEMORY])
            con.execute("SET temp_directory = ?", [str(Path(folder) / "spill")])
            yield con
        finally:
            con.close()


def _rank(con: duckdb.DuckDBPyConnection, source: str, into: str, license_rank: dict[str, int],
          source_priority: dict[str, int]) -> int:
    """Create ``into``: the rows of ``source`` with ``position``, their place in the keep order (0 survives
    first). Returns how many rows there are."""
    con.register("license_ranks", pa.table({"license": pa.array(list(license_rank), pa.string()),
                                            "rank": pa.array(list(license_rank.values()), pa.int64())}))
    con.register("source_priorities", pa.table({"source": pa.array(list(source_priority), pa.string()),
                                                "priority": pa.array(list(source_priority.values()), pa.int64())}))
    con.execute(f"CREATE OR REPLACE TABLE {into} AS SELECT c.*, row_number() OVER (ORDER BY {KEEP_ORDER}) - 1 "
                f"AS position FROM {source} c LEFT JOIN license_ranks l ON c.license = l.license "
                f"LEFT JOIN source_priorities p ON c.source = p.source")
    return _scalar(con, f"SELECT count(*) FROM {into}")


def keep_positions(candidates: pa.Table, license_rank: dict[str, int], source_priority: dict[str, int]) -> np.ndarray:
    """Each row's place in the keep order (0 survives first); needs ORDER_COLUMNS, optional ``earlier``."""
    earlier = EARLIER if EARLIER in candidates.column_names else f"false AS {EARLIER}"
    with _connection() as con:
        con.register("given", candidates.select([c for c in candidates.column_names if c in (*ORDER_COLUMNS, EARLIER)])
                     .append_column("given_row", pa.array(np.arange(candidates.num_rows))))
        con.execute(f"CREATE TABLE keyed AS SELECT {', '.join(ORDER_COLUMNS)}, {earlier}, given_row FROM given")
        _rank(con, "keyed", "ranked", license_rank, source_priority)
        return _column(con, "SELECT position FROM ranked ORDER BY given_row", np.int64)


def _scalar(con: duckdb.DuckDBPyConnection, query: str, params: list | None = None) -> int:
    return con.execute(query, params).fetchall()[0][0]


def _column(con: duckdb.DuckDBPyConnection, query: str, dtype: type, params: list | None = None) -> np.ndarray:
    """The one column of ``query`` as a numpy array, fetched in bounded batches."""
    batches = [batch.column(0).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
               for batch in con.sql(query, params=params).to_arrow_reader(1 << 20)]
    return np.concatenate(batches) if batches else np.zeros(0, dtype=dtype)


def _losers(pairs: np.ndarray, first_new: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Of the groups ``pairs`` (of keep positions) link, every member but the first and that first.

    Positions below ``first_new`` (kept by an earlier run) win their group and are never losers.
    """
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    nodes, linked = np.unique(pairs, return_inverse=True)
    labels = components(len(nodes), linked.reshape(pairs.shape))
    _, first = np.unique(labels, return_index=True)  # nodes ascend: a label's first node is its best
    winners = nodes[first][labels]
    lost = (nodes != winners) & (nodes >= first_new)
    return nodes[lost], winners[lost]


def _decisions(con: duckdb.DuckDBPyConnection, table: str, losers: np.ndarray, winners: np.ndarray,
               measure: np.ndarray, reason: str, detail: Callable[[float, str, str | None], str]) -> pa.Table:
    """Decisions for the rows of ``table`` at positions ``losers``, each lost to ``winners``' row;
    ``detail(measure, kept key, kept record's earlier run)`` explains each."""
    con.register("lost", pa.table({"loser": losers, "winner": winners, "measure": measure}))
    found = con.sql(f"SELECT l.key, w.key AS kept, w.{EARLIER_RUN} AS run, d.measure FROM lost d "
                    f"JOIN {table} l ON l.position = d.loser JOIN {table} w ON w.position = d.winner "
                    f"ORDER BY l.key").to_arrow_table()
    con.unregister("lost")
    details = [detail(m, k, r) for m, k, r in zip(found["measure"].to_pylist(), found["kept"].to_pylist(),
                                                   found["run"].to_pylist())]
    return pa.table({"key": found["key"], "duplicate_of": found["kept"], "reason": [reason] * found.num_rows,
                     "detail": details}, schema=DECISIONS)


def empty_decisions() -> pa.Table:
    return DECISIONS.empty_table()


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes linked by ``pairs`` (union-find, in scipy's C)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _unique_pairs(pairs: np.ndarray, n: int, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    """``pairs`` (i < j) sorted, each once, with the ``values`` of each pair's first occurrence."""
    codes, first = np.unique(pairs[:, 0] * np.int64(n) + pairs[:, 1], return_index=True)
    return (np.stack([codes // n, codes % n], axis=1), *(v[first] for v in values))


# ---------------------------------------------------------------- exact


def exact_decisions(parquet_glob: str, license_rank: dict[str, int], source_priority: dict[str, int]) -> pa.Table:
    """Decisions for every pending record whose sha256 an earlier-ranked record shares."""
    with _connection() as con:
        con.execute(f"CREATE TABLE hashed AS SELECT {', '.join(ORDER_COLUMNS)}, sha256, false AS {EARLIER} "
                    f"FROM read_parquet(?) WHERE status = ? AND sha256 IS NOT NULL", [parquet_glob, records.PENDING])
        _rank(con, "hashed", "ranked", license_rank, source_priority)
        return con.sql("SELECT key, duplicate_of, 'exact_sha256' AS reason, 'same original bytes as ' || duplicate_of "
                       "AS detail FROM (SELECT key, first_value(key) OVER (PARTITION BY sha256 ORDER BY position) "
                       "AS duplicate_of FROM ranked) WHERE key != duplicate_of ORDER BY key").to_arrow_table().cast(
                           DECISIONS)


# ---------------------------------------------------------------- perceptual


def add_phash(batch: pa.Table) -> pa.Table:
    """Stage: ``jpg`` -> ``phash``, the 64-bit DCT hash as 16 hex digits (null where no image or it failed)."""
    return put_phash(*images.decode(batch, "score", "perceptual hash"))


def put_phash(batch: pa.Table, rows: list[int], pictures: list) -> pa.Table:
    """``phash`` for the given rows of ``batch`` from their decoded pictures, null for the others."""
    import imagehash

    hashes: list[str | None] = [None] * batch.num_rows
    for i, picture in zip(rows, pictures):
        hashes[i] = str(imagehash.phash(picture))
    return records.put_column(batch, PHASH, pa.array(hashes, pa.string()))


def _substrings(n: int, max_distance: int) -> tuple[int, int, int]:
    """(substrings, bits in each, flips) of the multi-index hash with the fewest expected operations.

    Cut 64 bits into m substrings: two codes within r bits differ in at most r // m bits of
    one substring (pigeonhole), so probing each substring's buckets within r // m flips finds
    every pair. More flips mean more buckets probed per code, wider substrings fewer codes
    per bucket; a code costs about 3 operations per bucket probed and 6 per candidate checked
    (measured). At least 3 substrings keep a substring's bucket table within 2^21 entries.
    """
    def cost(m: int) -> float:
        width, flips = 64 // m, max_distance // m
        masks = sum(math.comb(width, k) for k in range(flips + 1))
        return m * masks * (3 + 6 * n / 2 ** width)

    m = min(range(3, max(3, min(max_distance + 1, 64)) + 1), key=cost)
    return m, 64 // m, max_distance // m


def _flip_masks(width: int, flips: int) -> np.ndarray:
    """Every ``width``-bit mask with at most ``flips`` bits set, 0 first."""
    return np.array([sum(1 << b for b in bits) for k in range(flips + 1)
                     for bits in itertools.combinations(range(width), k)], dtype=np.uint64)


def phash_pairs(words: np.ndarray, max_distance: int, block: int = 1 << 21) -> np.ndarray:
    """(i, j) with i < j, sorted, for every two 64-bit codes within ``max_distance`` bits: exact.

    Multi-index hashing (see ``_substrings``): only codes whose substrings land in buckets a
    few flips apart are compared, each candidate by its full Hamming distance, ``block``
    candidates at a time.
    """
    words = np.asarray(words, dtype=np.uint64)
    substrings, width, flips = _substrings(len(words), max_distance)
    masks = _flip_masks(width, flips)
    found = [np.zeros((0, 2), dtype=np.int64)]
    for t in range(substrings):
        sub = (words >> np.uint64(64 - width * (t + 1))) & np.uint64((1 << width) - 1)
        order = np.argsort(sub, kind="stable")
        keys, starts, counts = np.unique(sub[order], return_index=True, return_counts=True)
        bucket = np.full(1 << width, -1, dtype=np.int64)
        bucket[keys.astype(np.int64)] = np.arange(len(keys))
        for mask in masks:
            if mask:
                other = keys ^ mask
                near = bucket[other.astype(np.int64)]
                a = np.flatnonzero((near >= 0) & (keys < other))  # each two buckets once
                b = near[a]
            else:
                a = b = np.arange(len(keys))
            found.extend(_close_pairs(words, order, starts, counts, a, b, max_distance, block))
    return _unique_pairs(np.concatenate(found), len(words))[0]


def _close_pairs(words: np.ndarray, order: np.ndarray, starts: np.ndarray, counts: np.ndarray, a: np.ndarray,
                 b: np.ndarray, max_distance: int, block: int) -> Iterator[np.ndarray]:
    """(min, max) code pairs within ``max_distance`` among members of buckets ``a[k]`` x ``b[k]``."""
    sizes = counts[a] * counts[b]
    ends = np.cumsum(sizes)
    if len(ends) == 0:
        return
    cuts = np.unique(np.r_[0, np.searchsorted(ends, np.arange(block, ends[-1], block), side="right"), len(a)])
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        pair = np.repeat(np.arange(lo, hi), sizes[lo:hi])
        local = np.arange(len(pair)) - np.repeat(ends[lo:hi] - sizes[lo:hi] - (ends[lo - 1] if lo else 0),
                                                 sizes[lo:hi])
        i = order[starts[a[pair]] + local // counts[b[pair]]]
        j = order[starts[b[pair]] + local % counts[b[pair]]]
        close = (np.bitwise_count(words[i] ^ words[j]) <= max_distance) & (i != j)
        i, j = i[close], j[close]
        yield np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1).astype(np.int64)


def _phash_step(con: duckdb.DuckDBPyConnection, table: str, config: PHashDedup) -> pa.Table:
    """Decisions among the ranked rows of ``table`` (with ``phash``) whose pHashes link them to a better one."""
    bad = con.execute(f"SELECT key FROM {table} WHERE {PHASH} IS NULL OR NOT regexp_full_match({PHASH}, ?) "
                      f"ORDER BY key LIMIT 5", ["[0-9a-fA-F]{16}"]).fetchall()
    if bad:
        raise ValueError(f"records without a 64-bit phash (16 hex digits): {[k for (k,) in bad]}")
    words = _column(con, f"SELECT ('0x' || {PHASH})::UBIGINT FROM {table} ORDER BY position", np.uint64)
    losers, winners = _losers(phash_pairs(words, config.max_distance))
    bits = np.bitwise_count(words[losers] ^ words[winners]).astype(np.int64)
    return _decisions(con, table, losers, winners, bits, "near_duplicate_phash", lambda bit, kept, _: (
        f"pHash {bit} bits from {kept} (group linked at <= {config.max_distance})"))


def _phash_candidates(source: str) -> str:
    return (f"SELECT {', '.join(ORDER_COLUMNS)}, {PHASH}, false AS {EARLIER}, NULL::VARCHAR AS {EARLIER_RUN} "
            f"FROM {source}")


def phash_decisions(candidates: pa.Table, license_rank: dict[str, int], source_priority: dict[str, int],
                    config: PHashDedup) -> pa.Table:
    """Decisions for pending records whose pHash is within ``max_distance`` bits of a better-ranked one."""
    with _connection() as con:
        con.register("given", candidates)
        con.execute(f"CREATE TABLE hashed AS {_phash_candidates('given')}")
        _rank(con, "hashed", "ranked", license_rank, source_priority)
        return _phash_step(con, "ranked", config)


# ---------------------------------------------------------------- semantic


Spread = Callable[[Callable[..., Any], Iterable[tuple], int], Iterator[Any]]


def local_map(fn: Callable[..., Any], calls: Iterable[tuple], memory: int = 0) -> Iterator[Any]:
    """``fn(*args)`` for each ``args`` in turn, in this process (``memory``, per call, is this process's)."""
    return (fn(*args) for args in calls)


def ray_map(fn: Callable[..., Any], calls: Iterable[tuple], memory: int = 0) -> Iterator[Any]:
    """``fn(*args)`` for each ``args`` as Ray tasks, results in order, at most one task per cluster CPU
    in flight (so the driver holds only their arguments). ``memory``: bytes each task needs, which
    Ray keeps within a node's memory when it places them."""
    import ray

    remote = ray.remote(num_cpus=1, memory=memory or None)(fn)
    in_flight = max(1, int(ray.cluster_resources().get("CPU", 1)))
    pending: collections.deque = collections.deque()
    for args in calls:
        pending.append(remote.remote(*args))
        if len(pending) >= in_flight:
            yield ray.get(pending.popleft())
    while pending:
        yield ray.get(pending.popleft())


def similar_pairs(reader: store.Reader, rows: np.ndarray, config: ClipDedup,
                  spread: Spread = local_map) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) with i < j, sorted, for every two of the vectors at ``reader`` rows ``rows[i]``, ``rows[j]``
    with cosine above ``config.threshold``; and each pair's cosine.

    Below ``exact_below`` vectors every pair is compared. Above, k-means (faiss, trained on a
    sample) splits them into ``nlist`` lists; each vector is compared with the members of its
    ``nprobe`` nearest lists, so a pair is found when one's list is among the other's nearest
    -- near-duplicates almost always share a list. Lists are taken in groups whose vectors
    (members and the vectors probing them) number at most ``max_vectors``, each group's
    vectors read from the store at once, so memory follows ``max_vectors``, not the run.
    The comparisons are matrix products per list (BLAS): on these cores about 6x faster than
    faiss' IVF range search, which scans list members one by one. Groups are compared by
    ``spread``: one after another here, or as Ray tasks over a cluster (``ray_map``), each
    reading its own vectors from the store.
    """
    lists, centroids = _probe_lists(reader, rows, config)
    nlist = len(centroids)
    members, member_bounds = _grouped(lists[:, 0], nlist)  # a vector is a member of its nearest list
    probes, probe_bounds = _grouped(lists.ravel(), nlist)
    probes //= lists.shape[1]  # position in the flattened (n, nprobe) array -> vector
    groups = -(-len(probes) // config.max_vectors)
    del lists

    def calls() -> Iterator[tuple]:
        for group in _list_groups(_list_order(centroids, groups, config.seed), probes, probe_bounds,
                                  config.max_vectors):
            work = [(probes[probe_bounds[c]:probe_bounds[c + 1]], members[member_bounds[c]:member_bounds[c + 1]])
                    for c in group]
            needed = np.unique(np.concatenate([queries for queries, _ in work]))  # a list's members probe it too
            yield (reader, rows[needed], [(np.searchsorted(needed, q), np.searchsorted(needed, m)) for q, m in work],
                   config.threshold, needed)

    found, cosines = [np.zeros((0, 2), dtype=np.int64)], [np.zeros(0, dtype=np.float32)]
    for needed, pairs, similar in _spread_groups(spread, calls(), config.max_vectors * reader.dim):
        found.append(needed[pairs])
        cosines.append(similar)
    return _unique_pairs(np.concatenate(found), len(rows), np.concatenate(cosines))


def _spread_groups(spread: Spread, calls: Iterator[tuple], group_values: int) -> Iterator[tuple]:
    """Each group's (needed, pairs among needed, cosines); ``needed`` stays here, only the rows travel."""
    kept: collections.deque = collections.deque()

    def sent() -> Iterator[tuple]:
        for *args, needed in calls:
            kept.append(needed)
            yield tuple(args)
    for pairs, similar in spread(compare_group, sent(), _group_bytes(group_values)):
        yield kept.popleft(), pairs, similar


def _group_bytes(values: int) -> int:
    """What comparing one group holds: its float16 vectors, a float32 list and a similarity block."""
    return 2 * values + 4 * (1 << 24) * 2


def compare_group(reader: store.Reader, rows: np.ndarray, work: list[tuple[np.ndarray, np.ndarray]],
                  threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The pairs above ``threshold`` among one group's vectors (store rows ``rows``): for each list, its
    probing vectors against its members (both as positions in ``rows``), and their cosines."""
    vectors = reader.gather(rows)
    found, cosines = [np.zeros((0, 2), dtype=np.int64)], [np.zeros(0, dtype=np.float32)]
    for queries, listed in work:
        pairs, similar = _pairs_above(vectors, queries, listed, threshold)
        found.append(pairs)
        cosines.append(similar)
    return np.concatenate(found), np.concatenate(cosines)


def _probe_lists(reader: store.Reader, rows: np.ndarray, config: ClipDedup,
                 chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(n, nprobe) k-means list ids of each vector, nearest first, and the lists' centroids; one list of all
    (centroid 0) when n < exact_below."""
    import faiss

    n = len(rows)
    if n < config.exact_below:
        return np.zeros((n, 1), dtype=np.int32), np.zeros((1, reader.dim), dtype=np.float32)
    nlist = config.nlist or max(1, int(2 * math.sqrt(n)))
    # 64 points per list place the centroids well enough (faiss asks for >= 39) and keep
    # training to a minute at a million vectors; spherical: centroids on the unit sphere.
    kmeans = faiss.Kmeans(reader.dim, nlist, niter=10, seed=config.seed, spherical=True, max_points_per_centroid=64)
    sample = np.random.default_rng(config.seed).choice(n, size=min(n, 64 * nlist), replace=False)
    kmeans.train(reader.gather(rows[np.sort(sample)]).astype(np.float32))
    nprobe = min(config.nprobe, nlist)
    lists = np.empty((n, nprobe), dtype=np.int32)
    for start in range(0, n, chunk):
        lists[start:start + chunk] = kmeans.index.search(reader.gather(rows[start:start + chunk]).astype(np.float32),
                                                         nprobe)[1]
    return lists, kmeans.centroids


def _grouped(labels: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions sorted by label, and where each label's run starts (``groups + 1`` bounds)."""
    order = np.argsort(labels, kind="stable")
    return order, np.searchsorted(labels[order], np.arange(groups + 1))


def _list_order(centroids: np.ndarray, groups: int, seed: int) -> np.ndarray:
    """The lists with neighbouring centroids next to each other (k-means of the centroids into ``groups``):
    a vector probes neighbouring lists, so a group of neighbours reads each of its vectors about once."""
    import faiss

    if groups < 2 or len(centroids) < 2 * groups:
        return np.arange(len(centroids))
    coarse = faiss.Kmeans(centroids.shape[1], groups, niter=10, seed=seed, spherical=True)
    coarse.train(np.ascontiguousarray(centroids, dtype=np.float32))
    return np.argsort(coarse.index.search(np.ascontiguousarray(centroids, dtype=np.float32), 1)[1].ravel(),
                      kind="stable")


def _list_groups(order: np.ndarray, probes: np.ndarray, probe_bounds: np.ndarray,
                 max_vectors: int) -> Iterator[list[int]]:
    """Lists, in ``order``, grouped so a group's distinct probing vectors number at most ``max_vectors``
    (a larger list alone)."""
    seen = np.zeros(int(probes.max()) + 1 if len(probes) else 0, dtype=bool)
    group: list[int] = []
    total = 0
    for c in order.tolist():
        probing = probes[probe_bounds[c]:probe_bounds[c + 1]]
        new = int(np.count_nonzero(~seen[probing]))
        if group and total + new > max_vectors:
            yield group
            seen[:] = False
            group, total, new = [], 0, len(probing)
        seen[probing] = True
        group.append(c)
        total += new
    if group:
        yield group


def _pairs_above(vectors: np.ndarray, queries: np.ndarray, members: np.ndarray, threshold: float,
                 block: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) index pairs of queries x members with inner product above ``threshold``, self excluded,
    and their inner products."""
    found, similar = [np.zeros((0, 2), dtype=np.int64)], [np.zeros(0, dtype=np.float32)]
    if len(members) == 0:
        return found[0], similar[0]
    m = vectors[members].astype(np.float32)
    step = max(1, block // len(members))  # bounds the similarity block to ``block`` floats
    for start in range(0, len(queries), step):
        q = queries[start:start + step]
        products = vectors[q].astype(np.float32) @ m.T
        rows, cols = np.nonzero(products > threshold)
        a, b = q[rows], members[cols]
        keep = a != b
        found.append(np.stack([np.minimum(a, b)[keep], np.maximum(a, b)[keep]], axis=1).astype(np.int64))
        similar.append(products[rows[keep], cols[keep]])
    return np.concatenate(found), np.concatenate(similar)


def _candidate_stores(con: duckdb.DuckDBPyConnection, embeddings: Path, config: ClipDedup) -> list[Path]:
    """Add each earlier run's kept records to ``clip_candidates``; the stores, this run's first."""
    from curate.runfolder import RunFolder  # runfolder reads the config, which holds NearDedupConfig

    stores = [Path(embeddings)]
    for number, run in enumerate(config.against, start=1):
        folder = RunFolder.at(run.out)
        if not folder.has_records():
            raise FileNotFoundError(f"{folder.records}: no records of an earlier run "
                                    f"(is {folder.root} a finished run?)")
        con.execute(f"INSERT INTO clip_candidates SELECT {', '.join(ORDER_COLUMNS)}, true, ?, ? "
                    f"FROM read_parquet(?) WHERE status = ?",
                    [str(folder.root), number, str(folder.records / "*.parquet"), records.KEPT])
        stores.append(folder.embeddings)
    return stores


def _locate(con: duckdb.DuckDBPyConnection, stores: list[Path], table: str) -> tuple[store.Reader, np.ndarray,
                                                                                     np.ndarray]:
    """A reader over every store, and the store row and keep position of each row of ``table``, by row."""
    found = [store.parts(root) for root in stores]
    if len({parts[0].dim for parts in found}) > 1:
        raise ValueError(f"earlier runs' embeddings are {found[1][0].dim}-d, this run's are {found[0][0].dim}-d: "
                         f"dedup across runs needs the same embedder")
    first = 0
    for number, parts in enumerate(found):
        store.register_keys(con, parts, f"stored_{number}", first_row=first)
        first += sum(p.rows for p in parts)
    stored = " UNION ALL ".join(f"SELECT key, row, {number} AS store FROM stored_{number}"
                                for number in range(len(stores)))
    con.execute(f"CREATE TABLE located AS SELECT c.key, c.store, c.position, s.row FROM {table} c "
                f"LEFT JOIN ({stored}) s ON c.key = s.key AND c.store = s.store")
    for number, count, examples in con.execute("SELECT store, count(*), list(key ORDER BY key)[1:3] FROM located "
                                               "WHERE row IS NULL GROUP BY store ORDER BY store").fetchall():
        total = _scalar(con, f"SELECT count(*) FROM {table} WHERE store = ?", [number])
        raise KeyError(f"{stores[number]}: no embedding for {count} of {total} keys, e.g. {examples}")
    rows = _column(con, "SELECT row FROM located ORDER BY row", np.int64)
    positions = _column(con, "SELECT position FROM located ORDER BY row", np.int64)
    return store.Reader([p for parts in found for p in parts]), rows, positions


def _loser_cosines(reader: store.Reader, row_at: np.ndarray, pairs: np.ndarray, cosines: np.ndarray,
                   losers: np.ndarray, winners: np.ndarray, max_vectors: int) -> np.ndarray:
    """Each loser's cosine to its group's survivor: from ``pairs`` when the two are linked directly, else
    read from the store (``row_at``: a keep position's store row), ``max_vectors`` at a time."""
    if len(losers) == 0:
        return np.zeros(0, dtype=np.float32)
    n = len(row_at)
    codes = pairs[:, 0] * np.int64(n) + pairs[:, 1]  # ascending, as the pairs are sorted
    wanted = winners * np.int64(n) + losers  # a survivor comes first in the keep order
    where = np.searchsorted(codes, wanted).clip(max=len(codes) - 1)
    direct = codes[where] == wanted
    result = np.where(direct, cosines[where], np.nan).astype(np.float32)
    linked = np.flatnonzero(~direct)
    step = max(1, max_vectors // 2)
    for start in range(0, len(linked), step):
        k = linked[start:start + step]
        a = reader.gather(row_at[losers[k]]).astype(np.float32)
        b = reader.gather(row_at[winners[k]]).astype(np.float32)
        result[k] = (a * b).sum(axis=1)
    return result


def _clip_step(con: duckdb.DuckDBPyConnection, embeddings: Path, license_rank: dict[str, int],
               source_priority: dict[str, int], config: ClipDedup, spread: Spread) -> pa.Table:
    """Decisions for ``pending`` records whose CLIP embedding is near a better-ranked (or earlier-kept) one's.

    Records kept by earlier runs (``config.against``) win every group they are in and are not decided.
    """
    con.execute(f"CREATE TABLE clip_candidates AS SELECT {', '.join(ORDER_COLUMNS)}, {EARLIER}, {EARLIER_RUN}, "
                f"0 AS store FROM pending")
    stores = _candidate_stores(con, embeddings, config)
    _rank(con, "clip_candidates", "clip_ranked", license_rank, source_priority)
    earlier = _scalar(con, f"SELECT count(*) FROM clip_ranked WHERE {EARLIER}")
    reader, rows, positions = _locate(con, stores, "clip_ranked")
    pairs, cosines = similar_pairs(reader, rows, config, spread)
    pairs = np.sort(positions[pairs], axis=1)  # vector numbers -> keep positions
    pairs, cosines = _unique_pairs(pairs, len(rows), cosines)
    losers, winners = _losers(pairs, first_new=earlier)
    row_at = np.empty(len(rows), dtype=np.int64)
    row_at[positions] = rows
    measure = _loser_cosines(reader, row_at, pairs, cosines, losers, winners, config.max_vectors)

    def detail(cosine: float, kept: str, run: str | None) -> str:
        where = f" kept by the earlier run {run}" if run else ""
        return f"CLIP cosine {cosine:.3f} to {kept}{where} (group linked at > {config.threshold})"

    return _decisions(con, "clip_ranked", losers, winners, measure, "near_duplicate_clip", detail)


# ---------------------------------------------------------------- the run's near dedup


def near_decisions(parquet_glob: str, embeddings: Path | None, license_rank: dict[str, int],
                   source_priority: dict[str, int], config: NearDedupConfig, decided: pa.Table,
                   spread: Spread = local_map) -> pa.Table:
    """pHash then CLIP decisions over the pending records ``decided`` (exact dedup's decisions) left.

    ``parquet_glob``: the scored records (with ``phash`` when pHash dedup is on); ``embeddings``:
    the run's embedding store (needed when CLIP dedup is on); ``spread``: how CLIP dedup's groups of
    lists are compared (``ray_map`` in a run: as Ray tasks).
    """
    columns = [*ORDER_COLUMNS, *([PHASH] if config.phash else [])]
    found = []
    with _connection() as con:
        con.register("decided", decided.select(["key"]))
        con.execute(f"CREATE TABLE pending AS SELECT {', '.join('r.' + c for c in columns)}, false AS {EARLIER}, "
                    f"NULL::VARCHAR AS {EARLIER_RUN} FROM read_parquet(?) r ANTI JOIN decided d USING (key) "
                    f"WHERE r.status = ?", [parquet_glob, records.PENDING])
        if config.phash:
            _rank(con, "pending", "phash_ranked", license_rank, source_priority)
            found.append(_phash_step(con, "phash_ranked", config.phash))
            con.register("decided", found[-1].select(["key"]))
            con.execute("DELETE FROM pending WHERE key IN (SELECT key FROM decided)")
        remaining = _scalar(con, "SELECT count(*) FROM pending")
        if config.clip and remaining:
            if embeddings is None:
                raise ValueError("CLIP dedup needs the run's embeddings: turn on scoring")
            found.append(_clip_step(con, embeddings, license_rank, source_priority, config.clip, spread))
    return pa.concat_tables(found) if found else empty_decisions()


# ---------------------------------------------------------------- apply


DECIDED = "dedup_"  # prefix of the decision columns joined onto records for ApplyDuplicates
_JOIN = ("SELECT c.*, " + ", ".join(f"d.{name} AS {DECIDED}{name}" for name in DECISIONS.names[1:])
         + " FROM candidates c LEFT JOIN decisions d USING (key)")


def join_decisions(records_glob: str, decisions_file: Path, target: Path) -> None:
    """Write the records with their dedup decision joined on (``ApplyDuplicates`` applies it).

    DuckDB streams the join into the folder ``target`` in files of bounded size: no process
    holds the run's records or its decisions, and no task is handed a whole-run lookup table.
    """
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
    con.register("candidates", con.read_parquet(records_glob))
    con.register("decisions", con.read_parquet(str(decisions_file)))
    con.execute(f"COPY ({_JOIN}) TO ? (FORMAT parquet, FILE_SIZE_BYTES '64MB', ROW_GROUP_SIZE 10000)",
                [str(target)])


def attach_decisions(table: pa.Table, decisions: pa.Table) -> pa.Table:
    """``join_decisions`` for tables in memory: the same join."""
    con = duckdb.connect()
    con.register("candidates", table)
    con.register("decisions", decisions.cast(DECISIONS))
    return con.sql(_JOIN).to_arrow_table()


class ApplyDuplicates:
    """Stage: pending records that lost their duplicate group -> ``duplicate`` of the survivor.

    Reads the decision columns ``join_decisions`` put beside each record, and drops them.
    """

    def __call__(self, table: pa.Table) -> pa.Table:
        joined = [DECIDED + name for name in DECISIONS.names[1:]]
        decided = table.select(joined).to_pylist()
        table = records.conform(table.drop_columns(joined))
        rows = table.to_pylist()
        for row, decision in zip(rows, decided):
            kept = decision[DECIDED + "duplicate_of"]
            if kept is not None and row["status"] == records.PENDING:
                row["duplicate_of"] = kept
                records.finish(row, records.DUPLICATE, decision[DECIDED + "reason"], decision[DECIDED + "detail"])
        return pa.Table.from_pylist(rows, schema=table.schema)
