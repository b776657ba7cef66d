"""The rights checks' cost: the embedded-metadata scan per image, and the host checks per candidate at N and 4N.

1. The Normaliser on the same originals (plain, and carrying XMP, IPTC and C2PA) with the scan
   (``curate.rights.embedded.scan``, as fetch runs it) and without: per-image time and ratio.
2. ``curate.rights.steps.before_fetch`` over N and 4N candidates on one loopback host (its
   robots.txt and tdmrep.json fetched once, then read from the cache): per-candidate time, the
   4N/N ratio (about 1 when the cost is linear) and peak RSS. Run::

    python benchmarks/rights.py [--images 200] [--candidates 20000]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from curate import demo, pixels
from curate.localserve import serve
from curate.rights import marked, steps
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
    table = pa.table({"key": [f"k{i:08d}" for i in range(count)], "url": [f"{url}d/{i}.jpg" for i in range(count)]})
    checks = steps.bound([RobotsTxt(), TdmReservation()], Folder(root), None)
    start = time.perf_counter()
    pending, decided = steps.before_fetch(table, checks, 5, "cleanroom")
    assert pending.num_rows + decided.num_rows == count
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=20000)
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


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
