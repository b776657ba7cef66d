"""``cleanroom sources pull`` from the command line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import pyarrow as pa

from curate import cli
from curate.config import resolve
from curate.ingest import Ingest, work_items

from test_import_cost import HEAVY, imported  # the suite's own import check (tests/ is on the path)

from .apis import APIS
from .conftest import RecordedAPI


def test_pull_from_a_test_server_prints_the_entry_that_reads_the_harvest(tmp_path, capsys):
    api = APIS["cleveland"]()
    with RecordedAPI(api.route) as server:
        code = cli.main(["sources", "pull", "cleveland", "--out", str(tmp_path / "out"), "--base-url",
                         server.url + "/api", "--contact", "someone@example.org", "--limit", "4"])
    printed = capsys.readouterr().out
    assert code == 0
    assert all("someone@example.org" in s.headers["User-Agent"] for s in server.seen)
    # The printed entry, pasted into a pipeline, is what the run ingests.
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("name: harvested\n" + printed[printed.index("sources:"):])
    sources = resolve(pipeline, {"out": str(tmp_path / "run")}).sources
    rows = pa.concat_tables(Ingest(sources)(pa.Table.from_pylist(work_items(sources)))).to_pylist()
    assert [(r["key"], r["url"], r["license"], r["status"]) for r in rows] == [
        (key, url, license, status) for key, url, license, status, *_ in api.expected()[:4]]
    assert all(r["attribution"].endswith("Cleveland Museum of Art, Creative Commons Zero 1.0 Universal") for r in rows)


def test_pull_without_a_contact_says_how_to_give_one(tmp_path, capsys):
    assert cli.main(["sources", "pull", "met", "--out", str(tmp_path / "out")]) == 2
    assert "pass --contact EMAIL_OR_URL or set harvest.contact" in capsys.readouterr().err


def test_pull_help_imports_no_heavy_module():
    assert not imported("-m", "curate.cli", "sources", "pull", "--help") & HEAVY


def test_a_pull_killed_by_a_signal_and_run_again_writes_every_page_once(tmp_path):
    api = APIS["commons"]()
    manifest = tmp_path / "commons-test.yaml"
    manifest.write_text("source: commons\nname: Wikimedia Commons\nadapter: commons\n"
                        "harvest: {requests_per_second: 20, page_size: 2, contact: tests@example.org}\n")
    third = threading.Event()

    def route(seen):
        if len(server.seen) >= 3:
            third.set()
        return api.route(seen)

    with RecordedAPI(route) as server:
        command = ["sources", "pull", str(manifest), "--out", str(tmp_path / "out"), "--base-url",
                   server.url + "/w/api.php"]
        process = subprocess.Popen([sys.executable, "-m", "curate.cli", *command], cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert third.wait(timeout=60)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        assert json.loads((tmp_path / "out" / "cursor.json").read_text())["done"] is False  # killed mid-harvest
        assert cli.main(command) == 0
        assert cli.main([*command[:4], str(tmp_path / "clean"), *command[5:]]) == 0
    harvested = (tmp_path / "out" / "pages.jsonl").read_bytes()
    assert harvested == (tmp_path / "clean" / "pages.jsonl").read_bytes()
    assert len(harvested.splitlines()) == len(api.records)
