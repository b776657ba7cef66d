"""Fetch throughput: our ``fetch.download`` + ``fetch.results`` vs a bare ``img2dataset.download``.

Ours stores what ``curate.pixels`` makes (Pillow: orientation, ICC, 16-bit, alpha); bare
stores what img2dataset's own cv2 resizer makes with the same size settings.

Generates small JPEGs of varied size into a temporary folder, serves them on loopback
with ``curate.localserve``, and fetches the same url list both ways with the same
settings, in one invocation. Run::

    python benchmarks/fetch.py [--images 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from curate import fetch, records
from curate.localserve import serve

import img2dataset  # noqa: E402,I001  (after curate.fetch, which sets NO_ALBUMENTATIONS_UPDATE)


def make_images(folder: Path, count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        width, height = (int(v) for v in rng.integers(64, 640, size=2))
        base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((width, height), Image.BILINEAR)  # smooth, photo-like sizes
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        names.append(f"{i:06d}.jpg")
        (folder / names[-1]).write_bytes(buffer.getvalue())
    return names


def run_ours(candidates: pa.Table, out: Path, settings: fetch.FetchSettings) -> int:
    fetch.download(candidates, out, settings)
    table = fetch.results(out)
    return table.filter(pc.equal(table["status"], records.PENDING)).num_rows


def run_bare(candidates: pa.Table, out: Path, settings: fetch.FetchSettings) -> int:
    url_list = out.parent / f"{out.name}-urls.parquet"
    pq.write_table(candidates.rename_columns([fetch.KEY_COLUMN, "url"]), url_list)
    resize = dict(image_size=settings.image_size, resize_mode=settings.resize_mode,
                  resize_only_if_bigger=settings.resize_only_if_bigger, encode_quality=settings.encode_quality)
    img2dataset.download(url_list=str(url_list), output_folder=str(out), **settings.img2dataset_args(), **resize)
    status = pq.read_table([str(p) for p in out.glob("*.parquet")], columns=["status"])["status"]
    return pc.sum(pc.equal(status, "success")).as_py() or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; the order alternates per round")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--per-shard", type=int, default=250)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--distributor", choices=["multiprocessing", "ray"], default="multiprocessing")
    args = parser.parse_args()
    settings = fetch.FetchSettings(processes_count=args.processes, thread_count=args.threads,
                                   number_sample_per_shard=args.per_shard, image_size=args.image_size,
                                   distributor=args.distributor)

    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        tmp = Path(tmp)
        (tmp / "site").mkdir()
        started = time.perf_counter()
        names = make_images(tmp / "site", args.images)
        print(f"made {len(names)} JPEGs in {time.perf_counter() - started:.1f} s")
        timings: dict[str, list[float]] = {"bare": [], "ours": []}
        with serve(tmp / "site") as base_url:
            candidates = pa.table({"key": [f"bench-{n[:-4]}" for n in names], "url": [base_url + n for n in names]})
            runners = [("bare", run_bare), ("ours", run_ours)]
            for round_ in range(args.rounds):
                # alternate who goes first: the first run of a round warms caches for the second
                for name, runner in runners if round_ % 2 == 0 else runners[::-1]:
                    started = time.perf_counter()
                    ok = runner(candidates, tmp / f"{name}-{round_}", settings)
                    timings[name].append(time.perf_counter() - started)
                    if ok != len(names):
                        raise SystemExit(f"{name}: only {ok} of {len(names)} images fetched")
            started = time.perf_counter()
            fetch.results(tmp / "ours-0")
            results_s = time.perf_counter() - started

    rate = {name: len(names) / statistics.median(times) for name, times in timings.items()}
    print(f"\n{len(names)} images, {settings.processes_count} processes x {settings.thread_count} threads, "
          f"{settings.distributor}, image_size {settings.image_size}, median of {args.rounds} run(s) each")
    for name, times in timings.items():
        print(f"  {name:5s} {rate[name]:7.1f} images/s   (runs: {', '.join(f'{t:.1f} s' for t in times)})")
    # Per-round ratios pair runs made seconds apart, so a load change between rounds cancels.
    paired = [bare / ours for bare, ours in zip(timings["bare"], timings["ours"])]
    print(f"  ours / bare (images/s): {statistics.median(paired):.3f} median of rounds "
          f"[{', '.join(f'{r:.2f}' for r in paired)}]; of medians {rate['ours'] / rate['bare']:.3f}")
    print(f"  of ours, fetch.results alone: {results_s * 1e3:.0f} ms")


if __name__ == "__main__":  # img2dataset starts its workers with spawn: they re-import this file
    main()
