"""The rights checks' cost: the embedded-metadata scan per image, and the host checks per candidate at N and 4N.

1. The Normaliser on the same originals (plain, and carrying XMP, IPTC and C2PA) with the scan
   (``curate.rights.embedded.scan``, as fetch runs it) and without: per-image time and ratio.
2. ``curate.rights.steps.before_fetch`` over N and 4N candidates on one loopback host (its
   robots.txt and tdmrep.json fetched once, then read from the cache): per-candidate time, the
   4N/N ratio (about 1 when the cost is linear) and peak RSS.
3. The page check's cache lookups as the filter step makes them (``TdmReservation`` on blocks of
   ``--block`` records whose pages come in random order) against a cache of P and 4P pages:
   per-record CPU time and the 4P/P ratio. A lookup reads at most one row group of
   ``curate.rights.pages.GROUP_ROWS`` pages however big the cache, so the ratio tends to 1 as P
   grows past block x GROUP_ROWS (below that a block shares row groups: at the defaults a
   record reads about 94 rows at P and 118 at 4P, a ratio near 1.25 from the reads alone). Run::

    python benchmarks/rights.py [--images 200] [--candidates 20000] [--pages 100000] [--block 500]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from curate import demo, pixels, records
from curate.localserve import serve
from curate.rights import marked, pages, steps
from curate.rights.filters import RobotsTxt, TdmReservation

DST = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


class Folder:
    def __init__(self, root: Path):
        self.root = root

    def stage_dir(self, name: str) -> Path:
        return self.root / name


def originals(count: int) -> list[bytes]:
    made = []
    for i in range(count):
        plain = demo.picture(i, 640, 480)
        made.append(plain if i % 2 else marked.jpeg(
            plain, xmp=marked.xmp_packet(digital_source_type=DST, rights="A. Photographer"),
            copyright_notice="A. Photographer", c2pa_actions=[{"action": "c2pa.created", "digitalSourceType": DST}]))
    return made


def per_image(data: list[bytes], scan: bool) -> float:
    normaliser, target = pixels.Normaliser(pixels.Target(size=256)), pixels.Target(size=256)
    start = time.perf_counter()
    for original in data:
        if scan:
            normaliser(io.BytesIO(original))
        else:
            pixels.normalise(original, target)
    return (time.perf_counter() - start) / len(data)


def per_candidate(url: str, count: int, root: Path) -> float:
    table = pa.table({"key": [f"k{i:08d}" for i in range(count)], "url": [f"{url}d/{i}.jpg" for i in range(count)],
                      "page_url": pa.nulls(count, pa.string())})
    checks = steps.bound([RobotsTxt(), TdmReservation()], Folder(root), None)
    start = time.perf_counter()
    pending, decided = steps.before_fetch(table, checks, 5, "cleanroom")
    assert pending.num_rows + decided.num_rows == count
    return (time.perf_counter() - start) / count


def per_lookup(page_count: int, block: int, looked_up: int, root: Path) -> float:
    """Seconds per record of the page check over ``looked_up`` records, on a cache of ``page_count`` pages."""
    urls = [f"https://museum.example/object/{i:09d}" for i in range(page_count)]
    cache = pages.PageCache(root)
    cache.write([pages.cache_row(u, status=200, reservation="1" if i % 3 == 0 else None, found_in="meta")
                 for i, u in enumerate(urls)])
    check = TdmReservation()
    check.pages = pages.PageCache(root)  # a worker's own reader, as unpickled
    drawn = random.Random(0).sample(urls, looked_up)
    tables = [records.to_table([records.candidate("b", u, url="file:///x.jpg", page_url=u)
                                for u in drawn[i:i + block]]) for i in range(0, looked_up, block)]
    start = time.process_time()  # CPU time: a shared machine's other load does not count
    rejected = sum(check(t)["status"].to_pylist().count("rejected") for t in tables)
    assert rejected == sum(int(u[-9:]) % 3 == 0 for u in drawn)
    return (time.process_time() - start) / looked_up


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=20000)
    parser.add_argument("--pages", type=int, default=100000)
    parser.add_argument("--block", type=int, default=500)
    parser.add_argument("--lookups", type=int, default=10000)
    args = parser.parse_args()

    data = originals(args.images)
    per_image(data[:4], True)  # warm-up: Pillow's plugins, cbor2
    plain, scanned = per_image(data, False), per_image(data, True)
    print(f"normalise without scan: {plain * 1e3:.2f} ms/image; with scan: {scanned * 1e3:.2f} ms/image; "
          f"ratio {scanned / plain:.3f}")

    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        (site / ".well-known").mkdir(parents=True)
        (site / "robots.txt").write_text("User-agent: cleanroom\nDisallow: /d/1\n")
        (site / ".well-known" / "tdmrep.json").write_text(json.dumps([{"location": "/d/2*", "tdm-reservation": 1}]))
        hits: list[str] = []
        with serve(site, requests=hits) as url:
            small = per_candidate(url, args.candidates, Path(tmp) / "n")
            rss_small = peak_rss_mib()
            large = per_candidate(url, 4 * args.candidates, Path(tmp) / "4n")
            rss_large = peak_rss_mib()
    print(f"before_fetch: N={args.candidates}: {small * 1e6:.1f} us/candidate; 4N: {large * 1e6:.1f} us/candidate; "
          f"ratio {large / small:.3f}; peak RSS after N {rss_small:.0f} MiB, after 4N {rss_large:.0f} MiB "
          f"(ratio {rss_large / rss_small:.3f}); host requests {len(hits)} (2 per run, 2 runs)")

    with tempfile.TemporaryDirectory() as tmp:
        small = per_lookup(args.pages, args.block, args.lookups, Path(tmp) / "p")
        large = per_lookup(4 * args.pages, args.block, args.lookups, Path(tmp) / "4p")
    print(f"page check lookups, blocks of {args.block}: P={args.pages} pages cached: {small * 1e6:.1f} us/record; "
          f"4P: {large * 1e6:.1f} us/record; ratio {large / small:.3f}")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
