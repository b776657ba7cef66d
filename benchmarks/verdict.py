"""Cost of the license verdict at N and 4N records, against reading the same records.

Commons pages are the heaviest evidence we weigh (four license fields, the copyrighted
flag and every category). The real fixture pages are repeated with distinct page ids and,
for a third of them, a category unique to the page (so the scan caches cannot hide a cost
that grows with the run). Per size it prints the seconds per 1000 records of the adapter
alone (the baseline, measured in the same invocation), of the verdict stage, their ratio,
and the growth of the verdict's per-record cost from N to 4N (1.0 is linear). Run::

    python benchmarks/verdict.py [--n 20000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from curate import records, verdict
from curate.licenses import Policy
from curate.sources import commons

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sources" / "wikimedia-commons" / "pages.jsonl"
BATCH = 1000  # rows per verdict batch, as a Ray Data block would hand them


def write_pages(path: Path, n: int) -> None:
    pages = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            page = json.loads(json.dumps(pages[i % len(pages)]))
            page["pageid"] = 10_000_000 + i
            ext = page["imageinfo"][0]["extmetadata"]
            if i % 3 == 0 and "Categories" in ext:
                ext["Categories"]["value"] += f"|Photographs by contributor {i}"
            f.write(json.dumps(page) + "\n")


def measure(path: Path) -> tuple[float, float, int]:
    start = time.perf_counter()
    rows = list(commons.read(path, "commons", {}))
    read_s = time.perf_counter() - start
    policy = Policy.default()
    start = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        verdict.apply_policy(records.to_table(rows[i:i + BATCH]), policy)
    return read_s, time.perf_counter() - start, len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    per_record = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.n, 4 * args.n):
            path = Path(tmp) / f"pages-{n}.jsonl"
            write_pages(path, n)
            read_s, verdict_s, count = measure(path)
            per_record[n] = verdict_s / count
            print(f"N={count}: adapter {1000 * read_s / count:.3f} s/1000, verdict {1000 * verdict_s / count:.3f} "
                  f"s/1000, verdict/adapter {verdict_s / read_s:.2f}")
    print(f"verdict per-record cost 4N/N: {per_record[4 * args.n] / per_record[args.n]:.2f}")


if __name__ == "__main__":
    main()
