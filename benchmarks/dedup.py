"""Semantic dedup at scale: time, peak RSS, and recall/precision on planted near-duplicates.

Synthetic 512-d embeddings shaped like CLIP's: points scattered around 1000 centres (two
points of one centre have cosine about 0.5), stored as float16 like the embedding store.
Planted into them: near-duplicate pairs at cosine 0.96-0.99 (should be found at the
default threshold 0.95) and decoy pairs at 0.85-0.93 (should not). Each size runs in its
own process so its peak RSS is its own; the time covers ``dedup.semantic_decisions`` (IVF
training, range search, components, keep order), not the data generation. Run::

    python benchmarks/dedup.py [--sizes 100000 1000000] [--nprobe 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa

from curate import dedup

DIM = 512
CENTRES = 1000


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def at_cosine(base: np.ndarray, cosines: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at exactly ``cosines`` to the unit rows of ``base``."""
    other = rng.standard_normal(base.shape, dtype=np.float32)
    other = unit(other - (other * base).sum(axis=1, keepdims=True) * base)
    return unit(cosines[:, None] * base + np.sqrt(1 - cosines[:, None] ** 2) * other)


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float16 vectors, planted duplicate pairs, decoy pairs); 1% of rows in each kind of pair."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(CENTRES, DIM)).astype(np.float32))
    vectors = np.empty((n, DIM), dtype=np.float16)
    for start in range(0, n, 20_000):  # in chunks, so generating does not set the peak RSS
        rows = min(20_000, n - start)
        noise = rng.standard_normal((rows, DIM), dtype=np.float32) / np.sqrt(DIM)
        vectors[start:start + rows] = unit(centres[rng.integers(0, CENTRES, rows)] + noise)
    pairs = max(1, n // 100)
    chosen = rng.permutation(n)[:4 * pairs].reshape(2, pairs, 2)
    planted, decoys = chosen[0], chosen[1]
    for (pair, low, high) in ((planted, 0.96, 0.99), (decoys, 0.85, 0.93)):
        base = vectors[pair[:, 0]].astype(np.float32)
        vectors[pair[:, 1]] = at_cosine(unit(base), rng.uniform(low, high, len(pair)).astype(np.float32), rng)
    return vectors, planted, decoys


def candidates(n: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "key": [f"bench-{i:08d}" for i in range(n)],
        "license": rng.choice(["CC0-1.0", "public-domain"], n),
        "width": rng.integers(256, 4096, n).astype(np.int32),
        "height": rng.integers(256, 4096, n).astype(np.int32),
        "source": rng.choice(["met", "commons", "local"], n),
    })


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


def one(n: int, config: dedup.ClipDedup) -> dict:
    vectors, planted, decoys = synthetic(n)
    table = candidates(n)
    rss_before = rss_gib()
    started = time.perf_counter()
    decisions = dedup.semantic_decisions(table, vectors, {"CC0-1.0": 0, "public-domain": 1},
                                         {"met": 0, "commons": 1, "local": 2}, config)
    seconds = time.perf_counter() - started
    index = {f"bench-{i:08d}": i for i in range(n)}
    found = {tuple(sorted((index[k], index[d]))) for k, d in
             zip(decisions["key"].to_pylist(), decisions["duplicate_of"].to_pylist())}
    planted_set = {tuple(sorted(p)) for p in planted.tolist()}
    hits = len(found & planted_set)
    return {"n": n, "seconds": round(seconds, 1), "peak_rss_gib": round(peak_rss_gib(), 2),
            "rss_before_dedup_gib": round(rss_before, 2), "planted": len(planted_set), "removed": len(found),
            "recall": hits / len(planted_set), "precision": hits / len(found) if found else float("nan"),
            "decoys_removed": len(found & {tuple(sorted(p)) for p in decoys.tolist()}),
            "nlist": config.nlist or max(1, int(2 * np.sqrt(n))), "nprobe": config.nprobe}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--nprobe", type=int, default=dedup.ClipDedup().nprobe)
    parser.add_argument("--nlist", type=int, default=None)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a single size, in this process
    args = parser.parse_args()
    config = dedup.ClipDedup(threshold=args.threshold, nprobe=args.nprobe, nlist=args.nlist)
    if args.one:
        print(json.dumps(one(args.one, config)))
        return
    print(f"semantic dedup, {DIM}-d float16 embeddings, cosine > {args.threshold}, k-means lists, nprobe {args.nprobe}")
    for n in args.sizes:
        command = [sys.executable, __file__, "--one", str(n), "--threshold", str(args.threshold),
                   "--nprobe", str(args.nprobe), *(["--nlist", str(args.nlist)] if args.nlist else [])]
        r = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        print(f"{r['n']:>9,} records: {r['seconds']:7.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB "
              f"(RSS {r['rss_before_dedup_gib']:.2f} GiB with the data, before dedup), nlist {r['nlist']}; "
              f"planted pairs {r['planted']:,}: recall {r['recall']:.4f}, precision {r['precision']:.4f} "
              f"({r['removed']:,} removed, {r['decoys_removed']} decoys)")


if __name__ == "__main__":
    main()
