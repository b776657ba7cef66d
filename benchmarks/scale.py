"""Does a curation run cost the same per record at N and at 4N records? Memory and CPU, per stage.

Builds a corpus of distinct synthetic JPEGs (a folder source, CC0) served on loopback, runs the
whole pipeline on local Ray with the tiny random CLIP, the aesthetic and NSFW heads, exact, pHash
and CLIP dedup, and CLIP similarity on the captions, at N and at 4N records, and
prints per stage: records/s and CPU seconds of the whole process tree (this driver, Ray and its
workers); then the driver's and the whole tree's peak RSS at each size, and

    rss ratio   peak tree RSS at 4N / at N         (flat memory: about 1)
    cost ratio  CPU seconds per record at 4N / at N (linear cost: about 1)

``--watermark`` adds the LAION watermark detector (a full EfficientNet-B3 per image, random
weights): its cost per record is constant, about 0.2 CPU s here, so it slows the run tenfold
without changing either ratio. Run::

    python benchmarks/scale.py [--records 8000] [--factor 4] [--watermark] [--keep DIR]
    python benchmarks/scale.py --records 200000 --single    # one size: its figures, no ratios
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import yaml
from PIL import Image

from curate import demo, run as curate_run
from curate.localserve import serve


def make_images(folder: Path, count: int) -> None:
    """Distinct pictures: a random coarse pattern each, upscaled, so pHash and CLIP see different images."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        base = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(base).resize((160, 128), Image.BILINEAR).save(buffer, "JPEG", quality=85)
        (folder / f"{i:07d}.jpg").write_bytes(buffer.getvalue())


def pipeline(root: Path, images: Path, url: str, models: Path, with_watermark: bool) -> Path:
    manifest = root / "synthetic.yaml"
    manifest.write_text(yaml.safe_dump({"source": "synthetic", "name": "Synthetic", "adapter": "local",
                                        "metadata": [str(images)],
                                        "options": {"license": "CC0-1.0", "base_url": url}}))
    clip = {"model": "cleanroom-tiny-clip"}
    detector = {"watermark": {"weights": str(models / "watermark_model_v1.pt"), "max_pwatermark": 1.0}}
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump({
        "name": "scale", "sources": [{"manifest": str(manifest)}],
        "fetch": {"processes_count": 1, "thread_count": 16, "timeout": 10, "retries": 0, "image_size": 128},
        "filters": {"resolution": {"min_side": 64}},
        "scoring": {"clip": clip, "batch_size": 64,
                    "aesthetic": {"format": "improved_mlp", "weights": str(models / "aesthetic-mlp.pth"),
                                  "min_score": -100.0},
                    "nsfw": {"kind": "head", "weights": str(models / "nsfw-head.pt"), "max_pnsfw": 1.0},
                    **(detector if with_watermark else {})},
        "dedup": {"exact": True, "near": {"phash": {"max_distance": 4}, "clip": {"threshold": 0.9999}}},
        "captions": {"choose": ["metadata"], "similarity": {"model": clip, "threshold": -1.0, "batch_size": 64}},
        "shards": {"samples_per_shard": 1000}, "ray": {"num_cpus": 2}}, sort_keys=False))
    return path


class TreeSampler:
    """Peak RSS of this process tree, and the CPU time of every process in it, sampled every ``every`` seconds.

    A Ray worker's CPU time is read while it lives (its last sample counts once it is gone), so
    actors that exit with their stage are not lost from the stage's cost.
    """

    def __init__(self, every: float = 0.5):
        self.every, self.tree_peak, self._stop = every, 0, threading.Event()
        self.cpu_by_pid: dict[int, float] = {}
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def sample(self) -> None:
        me, total = psutil.Process(), 0
        for process in me.children(recursive=True):
            try:
                total += process.memory_info().rss
                self.cpu_by_pid[process.pid] = sum(process.cpu_times()[:2])
            except psutil.Error:
                continue
        self.tree_peak = max(self.tree_peak, total + me.memory_info().rss)

    def cpu(self) -> float:
        """CPU seconds of this process and of every process of the tree seen so far."""
        self.sample()
        return sum(psutil.Process().cpu_times()[:2]) + sum(self.cpu_by_pid.values())

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


ORIGINAL = {"stage": curate_run.Run.stage, "fetch": curate_run.Run.fetch, "write_shards": curate_run.Run.write_shards}


def timed(costs: dict[str, dict[str, float]], sampler: TreeSampler, method: str):
    """A Run method wrapped to record its wall and tree CPU seconds into ``costs``: under the stage's
    name for ``stage``, else under the method's (fetch and the tar writing are not stages)."""
    original = ORIGINAL[method]

    def wrapper(self, *args):
        wall, cpu = time.perf_counter(), sampler.cpu()
        try:
            return original(self, *args)
        finally:
            name = args[0] if method == "stage" else method
            costs[name] = {"seconds": time.perf_counter() - wall, "cpu": sampler.cpu() - cpu}
    return wrapper


def measure(root: Path, records: int, with_watermark: bool) -> dict:
    images, models = root / "images", root / "models"
    make_images(images, records)
    models.mkdir()
    demo.write_models(models, 32)
    costs: dict[str, dict[str, float]] = {}
    with serve(images) as url, TreeSampler() as sampler:
        for method in ORIGINAL:
            setattr(curate_run.Run, method, timed(costs, sampler, method))
        wall, cpu = time.perf_counter(), sampler.cpu()
        stats = curate_run.run(pipeline(root, images, url, models, with_watermark), root / "out")
        total = {"seconds": time.perf_counter() - wall, "cpu": sampler.cpu() - cpu}
    return {"records": records, "kept": stats["kept"], "stages": costs, "total": total,
            "driver_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "tree_peak_mb": sampler.tree_peak / 2**20}


def show(result: dict) -> None:
    n = result["records"]
    print(f"\n{n:,} records, {result['kept']:,} kept; driver peak {result['driver_peak_mb']:.0f} MB, "
          f"tree peak {result['tree_peak_mb']:.0f} MB")
    for name, cost in [*result["stages"].items(), ("total", result["total"])]:
        print(f"  {name:10s} {n / cost['seconds']:9.1f} records/s  {cost['cpu']:8.1f} CPU s  "
              f"{1000 * cost['cpu'] / n:6.2f} CPU ms/record")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=8000)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--watermark", action="store_true", help="score with the watermark detector too")
    parser.add_argument("--keep", type=Path, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--single", action="store_true", help="measure --records only, without the 4N run")
    args = parser.parse_args()
    sizes = [args.records] if args.single else [args.records, args.records * args.factor]
    with tempfile.TemporaryDirectory() as scratch:
        base = args.keep or Path(scratch)
        results = []
        for n in sizes:
            results.append(measure(base / f"n{n}", n, args.watermark))
            show(results[-1])
    if args.single:
        print(json.dumps(results))
        return
    small, large = results
    print(f"\nrss ratio  {large['tree_peak_mb'] / small['tree_peak_mb']:.2f}  (tree peak, {args.factor}N / N)")
    per_record = [r["total"]["cpu"] / r["records"] for r in results]
    print(f"cost ratio {per_record[1] / per_record[0]:.2f}  (CPU s per record, {args.factor}N / N)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
