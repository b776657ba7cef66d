"""Fetch throughput: our ``fetch.download`` + ``fetch.results`` vs a bare ``img2dataset.download``.

Ours stores what ``curate.pixels`` makes (Pillow: orientation, ICC, 16-bit, alpha); bare
stores what img2dataset's own cv2 resizer makes with the same size settings.

Generates small JPEGs of varied size into a temporary folder, serves them on loopback
with ``curate.localserve``, and fetches the same url list both ways with the same
settings (per-host limits off), in one invocation.

The many-hosts case serves the same files from one server per loopback alias (127.0.0.2,
127.0.0.3, ...: Linux routes all of 127/8 to lo, and each is a host to the limiter), fetches
them with per-host limits set, and prints each host's request rate measured from the times
its server saw the requests, beside the limit. Run::

    python benchmarks/fetch.py [--images 2000] [--rounds 3] [--hosts 4 --host-images 60 --host-rate 10]
"""

from __future__ import annotations

import argparse
import functools
import io
import math
import statistics
import tempfile
import threading
import time
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

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


class _Timed(SimpleHTTPRequestHandler):
    """Serves the site's files; notes when each request arrived and how many were open at once."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        server = self.server
        with server.lock:
            server.arrivals.append(time.monotonic())
            server.open += 1
            server.most_open = max(server.most_open, server.open)
        try:
            super().do_GET()
        finally:
            with server.lock:
                server.open -= 1

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (signature of the base class)
        pass


@contextmanager
def alias_servers(site: Path, count: int) -> Iterator[list[ThreadingHTTPServer]]:
    """One server of ``site`` on each of 127.0.0.2 ... 127.0.0.(count + 1)."""
    servers = []
    for i in range(count):
        server = ThreadingHTTPServer((f"127.0.0.{i + 2}", 0), functools.partial(_Timed, directory=str(site)))
        server.arrivals, server.open, server.most_open, server.lock = [], 0, 0, threading.Lock()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    try:
        yield servers
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def peak_per_second(arrivals: list[float]) -> int:
    """The most requests that arrived within any one second."""
    times, most, first = sorted(arrivals), 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def many_hosts(site: Path, names: list[str], out: Path, args: argparse.Namespace) -> None:
    settings = fetch.FetchSettings(processes_count=args.processes, thread_count=args.threads,
                                   number_sample_per_shard=args.per_shard, image_size=args.image_size,
                                   distributor=args.distributor, host_requests_per_second=args.host_rate,
                                   host_concurrency=args.host_concurrency)
    names = names[:args.host_images]
    with alias_servers(site, args.hosts) as servers:
        urls = [(f"h{h}-{n[:-4]}", f"http://{s.server_address[0]}:{s.server_address[1]}/{n}")
                for h, s in enumerate(servers) for n in names]
        started = time.perf_counter()
        ok = run_ours(pa.table({"key": [k for k, _ in urls], "url": [u for _, u in urls]}), out, settings)
        took = time.perf_counter() - started
        if ok != len(urls):
            raise SystemExit(f"many hosts: only {ok} of {len(urls)} images fetched")
    print(f"\n{args.hosts} hosts x {len(names)} images, {settings.processes_count} processes x "
          f"{settings.thread_count} threads, limits per host: {args.host_rate:g} requests/s, "
          f"{args.host_concurrency} open; {len(urls) / took:.1f} images/s in all")
    at_once = fetch.processes_at_once(settings, math.ceil(len(urls) / settings.number_sample_per_shard))
    print(f"  (each process keeps to the limits divided by the {at_once} that run at once, so a second "
          "may hold the limit plus one request per process)")
    for server in servers:
        arrivals = sorted(server.arrivals)
        mean = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
        print(f"  {server.server_address[0]:10s} {len(arrivals)} requests: {mean:5.2f} requests/s "
              f"(peak {peak_per_second(arrivals)} in a second) beside the limit {args.host_rate:g}; "
              f"at most {server.most_open} open beside the limit {args.host_concurrency}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; the order alternates per round")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--per-shard", type=int, default=250)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--distributor", choices=["multiprocessing", "ray"], default="multiprocessing")
    parser.add_argument("--hosts", type=int, default=4, help="loopback aliases of the many-hosts case (0: skip)")
    parser.add_argument("--host-images", type=int, default=60, help="images per host in the many-hosts case")
    parser.add_argument("--host-rate", type=float, default=10.0, help="the per-host request rate limit")
    parser.add_argument("--host-concurrency", type=int, default=4, help="the per-host open request limit")
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
        if args.hosts:
            many_hosts(tmp / "site", names, tmp / "hosts", args)

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
