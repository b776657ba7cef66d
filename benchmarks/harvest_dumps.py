"""Dump harvests at N and 4N records: peak RSS must stay flat, time grow linearly.

For each dump harvester (``cleanroom sources pull SOURCE --from-dump FILE``) a dump is generated
from the recorded records of tests/fixtures/sources (ids made unique): the Met's open-access
CSV in its real header layout, one row in ``--met-public-every`` public domain (those objects
are asked of a Collection API served on 127.0.0.1 by this process), Cleveland's ``data.json``
(one JSON array) and AIC's tar.gz of ``json/artworks/<id>.json``. Each pull runs in its own
process, so its peak RSS is its own; the dumps are written beforehand. Printed per source: the
records, seconds and peak RSS at each size, then the ratios 4N/N of peak RSS (flat: about 1)
and of time (linear: about 4). Run::

    python benchmarks/harvest_dumps.py [--rows 20000] [--met-public-every 50] [--work /tmp]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import resource
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sources"
MET_BASE = "/public/collection/v1"
# The header of MetObjects.csv (github.com/metmuseum/openaccess), kept beside the harvest tests.
HEADER_FILE = Path(__file__).resolve().parents[1] / "tests" / "harvest" / "MetObjects-header.csv"
MET_HEADER = next(csv.reader([HEADER_FILE.read_text(encoding="utf-8-sig")]))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_met(path: Path, rows: int, public_every: int) -> None:
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(MET_HEADER)
        for i in range(1, rows + 1):
            row = dict.fromkeys(MET_HEADER, "")
            row.update({"Object ID": str(i), "Is Public Domain": str(i % public_every == 0),
                        "Title": f"Object {i}, with a comma", "Object Number": f"29.100.{i}",
                        "Credit Line": "Gift of a friend,\nin two lines"})
            writer.writerow(row.values())


def write_cleveland(path: Path, rows: int) -> None:
    records = lines(FIXTURES / "cleveland-museum-of-art" / "artworks.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n")
        for i in range(rows):
            f.write(("," if i else "") + json.dumps({**records[i % len(records)], "id": i + 1}) + "\n")
        f.write("]\n")


def write_aic(path: Path, rows: int) -> None:
    folder = FIXTURES / "art-institute-of-chicago"
    artworks = [json.loads(f.read_text(encoding="utf-8")) for f in sorted((folder / "artworks").glob("*.json"))]
    with tarfile.open(path, "w:gz") as tar:
        add(tar, "artic-api-data/json/config.json", (folder / "config.json").read_bytes())
        for i in range(rows):
            add(tar, f"artic-api-data/json/artworks/{i + 1}.json",
                json.dumps({**artworks[i % len(artworks)], "id": i + 1}, indent=4).encode())


def add(tar: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    tar.addfile(info, io.BytesIO(content))


class MetObjects(BaseHTTPRequestHandler):
    """``/objects/<id>``: a recorded Met object under that id."""

    template = lines(FIXTURES / "metropolitan-museum-of-art" / "objects.jsonl")[0]

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        object_id = int(self.path.rsplit("/", 1)[1])
        body = json.dumps({**self.template, "objectID": object_id}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def child(adapter: str, dump: str, out: str, base_url: str) -> None:
    """One pull, in this process: prints its records, seconds and peak RSS as JSON."""
    from curate.harvest.pull import pull
    from curate.harvest.settings import HarvestSettings

    settings = HarvestSettings(base_url=base_url, requests_per_second=5000, concurrency=4, page_size=100,
                               contact="benchmarks@example.org")
    start = time.perf_counter()
    summary = pull(adapter, adapter, settings, Path(out), dump=dump)
    seconds = time.perf_counter() - start
    assert summary.complete, summary
    print(json.dumps({"records": summary.records, "seconds": seconds,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(adapter: str, dump: Path, out: Path, base_url: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", adapter, str(dump), str(out), base_url],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000, help="N: rows of the smaller dump (the larger has 4N)")
    parser.add_argument("--met-public-every", type=int, default=50, help="one Met row in this many is public domain")
    parser.add_argument("--work", type=Path, default=None, help="folder for the dumps and harvests")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    server = ThreadingHTTPServer(("127.0.0.1", 0), MetObjects)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}{MET_BASE}"
    writers = {"met": lambda p, n: write_met(p, n, args.met_public_every), "cleveland": write_cleveland,
               "aic": write_aic}
    names = {"met": "MetObjects.csv", "cleveland": "data.json", "aic": "artic-api-data.tar.gz"}
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        for adapter, write in writers.items():
            results = []
            for rows in (args.rows, 4 * args.rows):
                dump = Path(work) / f"{rows}-{names[adapter]}"
                write(dump, rows)
                result = measure(adapter, dump, Path(work) / f"{adapter}-{rows}", base_url)
                results.append(result)
                print(f"{adapter:9s} rows={rows:8d} dump={dump.stat().st_size / 2**20:7.1f} MiB "
                      f"records={result['records']:8d} seconds={result['seconds']:7.2f} "
                      f"peak_rss={result['rss_mb']:6.1f} MiB", flush=True)
            small, large = results
            print(f"{adapter:9s} 4N/N: peak rss ratio {large['rss_mb'] / small['rss_mb']:.2f} (flat: 1), "
                  f"time ratio {large['seconds'] / small['seconds']:.2f} (linear: 4)", flush=True)
    server.shutdown()


if __name__ == "__main__":
    main()
