"""Near dedup at scale: time, peak RSS, and recall/precision on planted near-duplicates.

pHash: random 64-bit hashes with copies planted at every distance from 0 to max_distance + 2.
First the baseline, measured here: comparing every pair (faiss' flat binary range search, the
method pHash dedup used before its index) against the index at ``--phash-baseline`` hashes
(same pairs, and the speed-up); then the whole pHash step (DuckDB keep order, the index,
components, decisions) on a parquet of ``--phash-sizes`` hashes.

CLIP: synthetic 512-d embeddings shaped like CLIP's: points scattered around 1000 centres (two
points of one centre have cosine about 0.5), written as float16 into an embedding store on
disk (clip-retrieval layout, parts of 100,000 rows) beside a parquet of the records. Planted
into them: near-duplicate pairs at cosine 0.96-0.99 (should be found at the default threshold
0.95) and decoy pairs at 0.85-0.93 (should not). The time covers ``dedup.near_decisions``
with CLIP dedup (keep order, k-means lists, pair search streamed from the store, components,
decisions), not the data generation.

Every measurement runs in its own process, so its peak RSS is its own; the data is written by
another process beforehand. Then the ratios of the largest size to the smallest: per-record
time and peak RSS. Run::

    python benchmarks/dedup.py [--phash-sizes 250000 1000000] [--clip-sizes 2500000 10000000]
                               [--work /big/disk/tmp] [--max-vectors 1000000]

The default CLIP sizes need about 13 GB of disk (one store at a time).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate import dedup, records
from curate.score import store

DIM = 512
CENTRES = 1000
PART_ROWS = 100_000
RANKS = {"CC0-1.0": 0, "public-domain": 1}
PRIORITY = {"met": 0, "commons": 1, "local": 2}


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def at_cosine(base: np.ndarray, cosines: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at exactly ``cosines`` to the unit rows of ``base``."""
    other = rng.standard_normal(base.shape, dtype=np.float32)
    other = unit(other - (other * base).sum(axis=1, keepdims=True) * base)
    return unit(cosines[:, None] * base + np.sqrt(1 - cosines[:, None] ** 2) * other)


def key_of(i: np.ndarray) -> list[str]:
    return [f"bench-{x:08d}" for x in i.tolist()]


def index_of(keys: list[str]) -> np.ndarray:
    return np.array([int(k.removeprefix("bench-")) for k in keys], dtype=np.int64)


def write_records(path: Path, rows: np.ndarray, rng: np.random.Generator, **columns: pa.Array) -> None:
    """Pending records ``rows`` with random licenses, sizes and sources, as the dedup stage reads them."""
    n = len(rows)
    pq.write_table(pa.table({
        "key": key_of(rows), "status": [records.PENDING] * n,
        "license": rng.choice(list(RANKS), n), "source": rng.choice(list(PRIORITY), n),
        "original_width": rng.integers(256, 4096, n).astype(np.int32),
        "original_height": rng.integers(256, 4096, n).astype(np.int32), **columns}), path)


def peak_rss_gib() -> float:
    """This process's peak RSS. Not getrusage: Linux carries its ru_maxrss over fork and exec, so a child
    would report the writer's peak."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 2**20  # kB


def score(found: set[tuple[int, int]], planted: np.ndarray, decoys: np.ndarray | None = None) -> dict:
    planted_set = {tuple(sorted(p)) for p in planted.tolist()}
    hits = len(found & planted_set)
    result = {"planted": len(planted_set), "removed": len(found), "hits": hits, "recall": hits / len(planted_set),
              "precision": hits / len(found) if found else float("nan")}
    if decoys is not None:
        result["decoys_removed"] = len(found & {tuple(sorted(p)) for p in decoys.tolist()})
    return result


def found_pairs(decisions: pa.Table) -> set[tuple[int, int]]:
    losers, kept = index_of(decisions["key"].to_pylist()), index_of(decisions["duplicate_of"].to_pylist())
    return {tuple(sorted(p)) for p in zip(losers.tolist(), kept.tolist())}


# ---------------------------------------------------------------- pHash


def phash_codes(n: int, max_distance: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random codes with n // 100 copies planted at distances 0..max_distance + 2; the pairs within reach."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    pairs = rng.permutation(n)[:2 * max(1, n // 100)].reshape(-1, 2)
    distances = np.arange(len(pairs)) % (max_distance + 3)
    for (i, j), distance in zip(pairs.tolist(), distances.tolist()):
        codes[j] = codes[i] ^ np.uint64(sum(1 << int(b) for b in rng.choice(64, size=distance, replace=False)))
    return codes, pairs[distances <= max_distance]


def phash_baseline(n: int, max_distance: int) -> dict:
    import faiss

    codes, _ = phash_codes(n, max_distance)
    started = time.process_time()
    indexed = dedup.phash_pairs(codes, max_distance)
    index_seconds = time.process_time() - started
    flat = faiss.IndexBinaryFlat(64)
    as_bytes = codes.astype(">u8").view(np.uint8).reshape(n, 8)
    started = time.process_time()
    flat.add(as_bytes)
    lims, _, found = flat.range_search(as_bytes, max_distance + 1)
    queries = np.repeat(np.arange(n), np.diff(lims.astype(np.int64)))
    every = np.stack([queries[found > queries], found[found > queries]], axis=1)
    flat_seconds = time.process_time() - started
    return {"n": n, "index_cpu_s": round(index_seconds, 2), "all_pairs_cpu_s": round(flat_seconds, 2),
            "same_pairs": indexed.tolist() == every.tolist(), "pairs": len(indexed)}


def phash_one(n: int, max_distance: int, work: Path) -> dict:
    """Write the records (in this process), then time the pHash step in a child."""
    codes, planted = phash_codes(n, max_distance)
    folder = Path(tempfile.mkdtemp(dir=work, prefix="phash-"))
    try:
        rng = np.random.default_rng(1)
        for start in range(0, n, PART_ROWS):
            rows = np.arange(start, min(n, start + PART_ROWS))
            write_records(folder / f"records-{start:09d}.parquet", rows, rng,
                          phash=pa.array([f"{c:016x}" for c in codes[rows].tolist()]))
        np.save(folder / "planted.npy", planted)
        return child(["--phash-child", str(folder), "--max-distance", str(max_distance)])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def phash_child(folder: Path, max_distance: int) -> dict:
    config = dedup.NearDedupConfig(phash=dedup.PHashDedup(max_distance=max_distance))
    wall, cpu = time.perf_counter(), time.process_time()
    decisions = dedup.near_decisions(str(folder / "records-*.parquet"), None, RANKS, PRIORITY, config,
                                     dedup.empty_decisions())
    result = {"seconds": round(time.perf_counter() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1),
              "peak_rss_gib": round(peak_rss_gib(), 2)}
    planted = np.load(folder / "planted.npy")
    # Planted copies are found; a removed record not in a planted pair would be a false link.
    found = found_pairs(decisions)
    linked = {i for pair in planted.tolist() for i in pair}
    return {**result, **score(found & {tuple(sorted(p)) for p in planted.tolist()}, planted),
            "removed": len(found), "removed_outside_planted": sum(1 for p in found if not set(p) <= linked)}


# ---------------------------------------------------------------- CLIP


def clip_store(n: int, folder: Path, seed: int = 0) -> None:
    """Write n synthetic embeddings (store parts of PART_ROWS) and their records; planted and decoy pairs."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(CENTRES, DIM)).astype(np.float32))
    pairs = max(1, n // 100)
    chosen = rng.permutation(n)[:4 * pairs].reshape(2, pairs, 2)
    planted, decoys = chosen[0], chosen[1]
    both = np.concatenate([planted, decoys])
    cosines = np.concatenate([rng.uniform(0.96, 0.99, pairs), rng.uniform(0.85, 0.93, pairs)]).astype(np.float32)
    base = unit(centres[rng.integers(0, CENTRES, len(both))]
                + rng.standard_normal((len(both), DIM), dtype=np.float32) / np.sqrt(DIM))
    # Each pair's two vectors, by row: the pairs' rows are spread over the whole store.
    paired_rows = both.ravel()
    paired_vectors = np.stack([base, at_cosine(base, cosines, rng)], axis=1).reshape(-1, DIM)
    order = np.argsort(paired_rows)
    paired_rows, paired_vectors = paired_rows[order], paired_vectors[order]
    records_rng = np.random.default_rng(seed + 1)
    for start in range(0, n, PART_ROWS):
        rows = np.arange(start, min(n, start + PART_ROWS))
        noise = rng.standard_normal((len(rows), DIM), dtype=np.float32) / np.sqrt(DIM)
        vectors = unit(centres[rng.integers(0, CENTRES, len(rows))] + noise)
        lo, hi = np.searchsorted(paired_rows, [rows[0], rows[-1] + 1])
        vectors[paired_rows[lo:hi] - start] = paired_vectors[lo:hi]
        store.write_part(folder / "embeddings", key_of(rows), vectors)
        write_records(folder / f"records-{start:09d}.parquet", rows, records_rng)
    np.save(folder / "planted.npy", planted)
    np.save(folder / "decoys.npy", decoys)


def clip_one(n: int, config: dedup.ClipDedup, work: Path) -> dict:
    folder = Path(tempfile.mkdtemp(dir=work, prefix="clip-"))
    try:
        started = time.perf_counter()
        clip_store(n, folder)
        written = time.perf_counter() - started
        result = child(["--clip-child", str(folder), "--config", config.model_dump_json()])
        return {**result, "write_seconds": round(written, 1),
                "store_gib": round(sum(p.stat().st_size for p in (folder / "embeddings").rglob("*")) / 2**30, 2)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def clip_child(folder: Path, config: dedup.ClipDedup) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    decisions = dedup.near_decisions(str(folder / "records-*.parquet"), folder / "embeddings", RANKS, PRIORITY,
                                     dedup.NearDedupConfig(clip=config), dedup.empty_decisions())
    result = {"seconds": round(time.perf_counter() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1),
              "peak_rss_gib": round(peak_rss_gib(), 2)}
    return {**result, **score(found_pairs(decisions), np.load(folder / "planted.npy"),
                              np.load(folder / "decoys.npy"))}


# ---------------------------------------------------------------- driver


def child(arguments: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *arguments], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def ratios(results: list[dict], label: str) -> None:
    if len(results) < 2:
        return
    small, large = results[0], results[-1]
    per_record = (large["cpu_s"] / large["n"]) / (small["cpu_s"] / small["n"])
    print(f"  {label} {large['n']:,} over {small['n']:,} ({large['n'] / small['n']:.0f}x records): "
          f"cpu per record {per_record:.2f}x, peak RSS {large['peak_rss_gib'] / small['peak_rss_gib']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phash-baseline", type=int, default=100_000)
    parser.add_argument("--phash-sizes", type=int, nargs="*", default=[250_000, 1_000_000])
    parser.add_argument("--max-distance", type=int, default=dedup.PHashDedup().max_distance)
    parser.add_argument("--clip-sizes", type=int, nargs="*", default=[2_500_000, 10_000_000])
    parser.add_argument("--threshold", type=float, default=dedup.ClipDedup().threshold)
    parser.add_argument("--nprobe", type=int, default=dedup.ClipDedup().nprobe)
    parser.add_argument("--max-vectors", type=int, default=dedup.ClipDedup().max_vectors)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--phash-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--clip-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phash_child:
        print(json.dumps(phash_child(args.phash_child, args.max_distance)))
        return
    if args.clip_child:
        print(json.dumps(clip_child(args.clip_child, dedup.ClipDedup.model_validate_json(args.config))))
        return

    if args.phash_sizes:
        print(f"pHash dedup, 64-bit hashes, max_distance {args.max_distance}")
        if args.phash_baseline:
            b = phash_baseline(args.phash_baseline, args.max_distance)
            print(f"  baseline at {b['n']:,}: every pair {b['all_pairs_cpu_s']} cpu-s, index {b['index_cpu_s']} "
                  f"cpu-s ({b['all_pairs_cpu_s'] / max(b['index_cpu_s'], 1e-9):.0f}x faster), "
                  f"same {b['pairs']:,} pairs: {b['same_pairs']}")
        results = []
        for n in args.phash_sizes:
            r = {"n": n, **phash_one(n, args.max_distance, args.work)}
            results.append(r)
            print(f"  {n:>11,} hashes: {r['seconds']:7.1f} s ({r['cpu_s']} cpu-s), peak RSS {r['peak_rss_gib']:.2f} "
                  f"GiB; planted pairs within reach {r['planted']:,}, {r['hits']:,} found: recall {r['recall']:.5f}; "
                  f"{r['removed']:,} removed, {r['removed_outside_planted']} outside planted pairs")
        ratios(results, "pHash")
    if args.clip_sizes:
        config = dedup.ClipDedup(threshold=args.threshold, nprobe=args.nprobe, max_vectors=args.max_vectors)
        print(f"CLIP dedup from a store on disk, {DIM}-d float16, cosine > {config.threshold}, k-means lists, "
              f"nprobe {config.nprobe}, max_vectors {config.max_vectors:,}")
        results = []
        for n in args.clip_sizes:
            r = {"n": n, **clip_one(n, config, args.work)}
            results.append(r)
            print(f"  {n:>11,} records ({r['store_gib']} GiB store, written in {r['write_seconds']} s): "
                  f"{r['seconds']:7.1f} s ({r['cpu_s']} cpu-s), peak RSS {r['peak_rss_gib']:.2f} GiB; "
                  f"planted pairs {r['planted']:,}, {r['hits']:,} found: recall {r['recall']:.5f}, precision "
                  f"{r['precision']:.5f} ({r['removed']:,} removed, {r['decoys_removed']} decoys)")
        ratios(results, "CLIP")


if __name__ == "__main__":
    main()
