"""Embedding throughput: the Ray Data embedding stage vs a bare batched open_clip loop.

Both embed the same JPEGs with the same model (random-initialised: speed does not depend on
the weights) in batches of the same size, decoding and preprocessing every image with the
model's own transform. The bare loop runs in this process on a model loaded beforehand;
the Ray figures are end to end -- blocks of images -> ``Embed`` in one actor -> collected --
including the actor's start and its model load, as a run pays them, and the rate once the
actor runs (from its first batch done to its last, Ray's per-batch costs included). Run::

    python benchmarks/embed.py [--model ViT-B-32] [--images 256] [--batch-size 32] [--precision fp32]
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import pyarrow as pa
from PIL import Image

from curate.score import clip, embed, images


def make_jpegs(count: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        width, height = (int(v) for v in rng.integers(256, 640, size=2))
        base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(base).resize((width, height), Image.BILINEAR).save(buffer, "JPEG", quality=85)
        out.append(buffer.getvalue())
    return out


def bare_loop(spec: clip.ClipSpec, jpegs: list[bytes], batch_size: int) -> tuple[float, float, float]:
    """(load seconds, seconds for all batches, images/s after the first batch) of a plain open_clip loop."""
    import torch

    started = time.perf_counter()
    loaded = clip.load(spec)
    loaded_at = time.perf_counter()
    first_done = None
    for start in range(0, len(jpegs), batch_size):
        pictures = [Image.open(io.BytesIO(j)).convert("RGB") for j in jpegs[start:start + batch_size]]
        pixels = torch.stack([loaded.preprocess(p) for p in pictures])
        with torch.no_grad(), torch.autocast("cpu", dtype=loaded.dtype, enabled=loaded.dtype != torch.float32):
            features = loaded.model.encode_image(pixels)
        torch.nn.functional.normalize(features.float(), dim=-1).numpy()
        first_done = first_done or time.perf_counter()
    ended = time.perf_counter()
    after_first = len(jpegs) - min(batch_size, len(jpegs))
    return loaded_at - started, ended - loaded_at, after_first / (ended - first_done) if ended > first_done else 0.0


class TimedEmbed(embed.Embed):
    """The embedding stage, stamping each batch with when the actor finished it (wall clock)."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = super().__call__(batch)
        return out.append_column("finished_at", pa.array([time.time()] * out.num_rows, pa.float64()))


def ray_stage(spec: clip.ClipSpec, blocks: list[pa.Table], batch_size: int,
              num_cpus: float) -> tuple[float, float, int]:
    """(end-to-end seconds, images/s once the actor runs, rows) for the Ray embedding stage.

    The second figure counts from the end of the actor's first batch to the end of its last,
    so it holds Ray's per-batch costs (scheduling, object transfer) but not the actor's start.
    """
    import ray

    started = time.perf_counter()
    out = (ray.data.from_arrow(blocks)
           .map_batches(TimedEmbed, fn_constructor_kwargs={"spec": spec, "batch_size": batch_size},
                        compute=ray.data.ActorPoolStrategy(size=1), num_cpus=num_cpus, batch_size=batch_size,
                        batch_format="pyarrow")
           .select_columns(["key", "finished_at"])
           .to_arrow_refs())
    stamps = pa.concat_tables(ray.get(out))
    seconds = time.perf_counter() - started
    finished = np.sort(stamps["finished_at"].to_numpy())
    first_batch = int((finished == finished[0]).sum())
    span = finished[-1] - finished[0]
    running = (len(finished) - first_batch) / span if span > 0 else float("nan")
    return seconds, running, stamps.num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the bare loop")
    # Fractional: an actor holding a whole CPU of two leaves Ray's other tasks too little (STACK.md).
    parser.add_argument("--actor-cpus", type=float, default=0.5, help="num_cpus of the embedding actor")
    args = parser.parse_args()
    spec = clip.ClipSpec(model=args.model, precision=args.precision)

    import ray
    import torch

    jpegs = make_jpegs(args.images)
    blocks = [pa.table({"key": [f"bench-{i:06d}" for i in range(start, min(start + args.batch_size, len(jpegs)))],
                        images.IMAGE: pa.array(jpegs[start:start + args.batch_size], pa.binary())})
              for start in range(0, len(jpegs), args.batch_size)]
    # The same torch threads as the actor: Ray sets OMP_NUM_THREADS=1 in an actor with num_cpus <= 1,
    # and on two busy cores two threads are slower and far noisier than one.
    torch.set_num_threads(args.threads)
    load_s, bare_s, bare_running = bare_loop(spec, jpegs, args.batch_size)
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        ray_s, steady_rate, rows = ray_stage(spec, blocks, args.batch_size, args.actor_cpus)
    finally:
        ray.shutdown()
    assert rows == len(jpegs)
    bare_rate, ray_rate = len(jpegs) / bare_s, len(jpegs) / ray_s
    print(f"model {spec.describe()} {args.precision}, {len(jpegs)} JPEGs (256-640 px), batch {args.batch_size}")
    print(f"bare open_clip loop : {bare_rate:7.2f} images/s  ({bare_s:.1f} s, model load {load_s:.1f} s not counted; "
          f"{args.threads} torch thread(s)); {bare_running:.2f} images/s after its first batch")
    print(f"Ray embedding stage : {ray_rate:7.2f} images/s  ({ray_s:.1f} s end to end, actor start + load included; "
          f"{args.num_cpus} Ray CPUs, actor num_cpus={args.actor_cpus}); {steady_rate:.2f} images/s after the "
          "actor's first batch")
    print(f"ratio Ray / bare    : {ray_rate / bare_rate:.2f} end to end, {steady_rate / bare_running:.2f} after the "
          "first batch")

if __name__ == "__main__":
    main()
