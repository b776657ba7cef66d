"""``--from-dump``: the Met's open-access CSV, Cleveland's data.json and AIC's tar, from a file or a URL."""

from __future__ import annotations

import csv
import io
import json
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from curate import cli
from curate.harvest.cursor import Cursor
from curate.harvest.pull import FAILURES, Summary, pull

from .apis import APIS, adapter_rows
from .conftest import FIXTURES, SERVER_ERROR, FakeTime, RecordedAPI, Reply, fake_client, jsonl, settings, too_many

# The header of MetObjects.csv (github.com/metmuseum/openaccess), as the file begins: a byte order mark first.
MET_HEADER = next(csv.reader([(Path(__file__).parent / "MetObjects-header.csv").read_text(encoding="utf-8-sig")]))
MET_BASE = "/public/collection/v1"
DUMP_PATH = "/published/dump"


def met_csv(rows: list[tuple[object, str, str]]) -> bytes:
    """MetObjects.csv holding ``(Object ID, Is Public Domain, Title)`` rows, the other columns as the Met fills
    them; titles may hold commas, quotes and line breaks, as the Met's do."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(MET_HEADER)
    for object_id, public_domain, title in rows:
        row = dict.fromkeys(MET_HEADER, "")
        row.update({"Object Number": f"29.100.{object_id}", "Is Highlight": "False", "Is Timeline Work": "False",
                    "Is Public Domain": public_domain, "Object ID": str(object_id), "Title": title,
                    "Department": "Asian Art", "Repository": "Metropolitan Museum of Art, New York, NY"})
        writer.writerow(row.values())
    return b"\xef\xbb\xbf" + text.getvalue().encode("utf-8")


def cleveland_json(records: list) -> bytes:
    return json.dumps(records, indent=1, ensure_ascii=False).encode("utf-8")


def aic_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"artic-api-data/json/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@dataclass
class Dump:
    adapter: str
    body: bytes
    expected: list[tuple]  # the adapter's rows of the harvest
    failures: list[str]  # the reasons failures.jsonl must hold, in order
    objects: list[str]  # API paths a pull may ask for (the Met); everything else is the dump


def met_dump() -> Dump:
    api = APIS["met"]()
    ids = [o["objectID"] for o in api.records]
    rows = [(i, "True", "Fish, and \"waves\",\nin a second line") for i in ids[:3]]
    rows += [(ids[3], "False", "not public domain: never asked for"), ("12a", "True", "an id that is not one")]
    rows += [(i, "True", "Carp") for i in ids[4:]]
    kept = [o for o in api.records if o["objectID"] != ids[3]]
    return Dump("met", met_csv(rows), rows_of("met", kept), ["malformed_row"],
                [f"{MET_BASE}/objects/{i}" for i in ids])


def cleveland_dump() -> Dump:
    records = APIS["cleveland"]().records
    return Dump("cleveland", cleveland_json([*records[:6], "not an artwork", *records[6:]]),
                rows_of("cleveland", records), ["malformed_record"], [])


def aic_dump() -> Dump:
    folder = FIXTURES / "art-institute-of-chicago"
    files = {"config.json": (folder / "config.json").read_bytes(), "agents/33.json": b'{"id": 33}'}
    artworks = sorted((folder / "artworks").glob("*.json"))  # the order the adapter reads the folder in
    files.update({f"artworks/{f.name}": f.read_bytes() for f in artworks[:2]})
    files["artworks/broken.json"] = b'{"id": 7, "title": "cut'
    files.update({f"artworks/{f.name}": f.read_bytes() for f in artworks[2:]})
    return Dump("aic", aic_tar(files), adapter_rows("aic", folder / "artworks"), ["malformed_record"], [])


def rows_of(adapter: str, records: list[dict]) -> list[tuple]:
    """The adapter's rows of ``records`` as its API serves them, one a line."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "records.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return adapter_rows(adapter, path)


DUMPS = {"met": met_dump, "cleveland": cleveland_dump, "aic": aic_dump}


class Served:
    """The Met's API and the published dump at ``DUMP_PATH``, on 127.0.0.1."""

    def __init__(self, dump: Dump):
        self.dump, self.met = dump, APIS["met"]()

    def route(self, seen):
        if seen.path == DUMP_PATH:
            return Reply(200, self.dump.body, {"Content-Type": "application/octet-stream"})
        return self.met.route(seen)


def harvest(dump: Dump, server: RecordedAPI, out: Path, source: str, **kwargs) -> Summary:
    harvest_settings = settings(server.url + MET_BASE, page_size=2, retries=4)
    return pull(dump.adapter, dump.adapter, harvest_settings, out, dump=source,
                client=fake_client(harvest_settings, FakeTime()), **kwargs)


def where(dump: Dump, tmp_path: Path, server: RecordedAPI, how: str) -> str:
    if how == "url":
        return server.url + DUMP_PATH
    path = tmp_path / f"published.{dump.adapter}"
    path.write_bytes(dump.body)
    return str(path)


@pytest.fixture(params=sorted(DUMPS))
def dump(request) -> Dump:
    return DUMPS[request.param]()


@pytest.mark.parametrize("how", ["file", "url"])
def test_a_dump_harvest_reads_as_the_records_it_holds(dump, how, tmp_path):
    with RecordedAPI(Served(dump).route) as server:
        summary = harvest(dump, server, tmp_path / "out", where(dump, tmp_path, server, how))
    assert summary.complete
    assert adapter_rows(dump.adapter, summary.output) == dump.expected
    assert [f["reason"] for f in jsonl(tmp_path / "out" / FAILURES)] == dump.failures
    asked = [s.path for s in server.seen]
    assert [p for p in asked if p == DUMP_PATH] == ([DUMP_PATH] if how == "url" else [])
    assert set(asked) - {DUMP_PATH} <= set(dump.objects)
    if how == "url":
        [kept] = (tmp_path / "out" / "raw" / "dump").iterdir()
        assert kept.read_bytes() == dump.body


def test_the_met_csv_asks_only_for_public_domain_ids_once_each(tmp_path):
    dump = met_dump()
    ids = [o["objectID"] for o in APIS["met"]().records]
    with RecordedAPI(Served(dump).route) as server:
        summary = harvest(dump, server, tmp_path / "out", where(dump, tmp_path, server, "file"))
    assert summary.records == len(ids) - 1
    asked = [s.path for s in server.seen]
    assert f"{MET_BASE}/objects/{ids[3]}" not in asked  # the row marked False
    assert sorted(asked) == sorted(f"{MET_BASE}/objects/{i}" for i in ids if i != ids[3])
    [failure] = jsonl(tmp_path / "out" / FAILURES)
    assert "'12a'" in failure["detail"] and failure["byte"] > 0
    cursor = json.loads((tmp_path / "out" / "cursor.json").read_text())
    assert cursor["done"] and cursor["identity"]["dump"].endswith("published.met")


class Killed(BaseException):
    """A kill where the cursor would be saved, after the step's files were written."""


@pytest.mark.parametrize("how", ["file", "url"])
def test_a_dump_pull_killed_at_any_step_and_run_again_duplicates_nothing(dump, how, tmp_path, monkeypatch):
    original_save = Cursor.save
    saved = []
    monkeypatch.setattr(Cursor, "save", lambda self, folder: saved.append(original_save(self, folder)))
    with RecordedAPI(Served(dump).route) as server:
        source = where(dump, tmp_path, server, how)
        clean = harvest(dump, server, tmp_path / "clean", source)
        assert len(saved) >= 4
        for kill_at in range(len(saved)):
            out, saves = tmp_path / f"killed-{kill_at}", iter(range(10_000))

            def save(self, folder, kill_at=kill_at):
                if next(saves) == kill_at:
                    if kill_at > 0:  # a line half written when it died
                        with open(folder / Path(clean.output).name, "ab") as torn:
                            torn.write(b'{"torn": ')
                    raise Killed
                original_save(self, folder)

            monkeypatch.setattr(Cursor, "save", save)
            with pytest.raises(Killed):
                harvest(dump, server, out, source)
            monkeypatch.setattr(Cursor, "save", original_save)
            again = harvest(dump, server, out, source)
            assert again.complete and again.records == clean.records
            assert again.output.read_bytes() == clean.output.read_bytes()
            assert jsonl(out / FAILURES) == jsonl(tmp_path / "clean" / FAILURES)
        downloads = len([s for s in server.seen if s.path == DUMP_PATH])
    assert downloads == (1 + len(saved) if how == "url" else 0)  # once a folder: a kept download is read again
    assert adapter_rows(dump.adapter, clean.output) == dump.expected


def test_a_limited_dump_pull_then_a_full_one_gives_every_record_once(dump, tmp_path):
    with RecordedAPI(Served(dump).route) as server:
        source = where(dump, tmp_path, server, "file")
        clean = harvest(dump, server, tmp_path / "clean", source)
        for limit in (1, 3, None):
            summary = harvest(dump, server, tmp_path / "out", source, limit=limit)
            assert summary.records == (limit or clean.records)
    assert summary.output.read_bytes() == clean.output.read_bytes()
    assert jsonl(tmp_path / "out" / FAILURES) == jsonl(tmp_path / "clean" / FAILURES)


def test_a_dump_url_arrives_whole_through_faults(tmp_path):
    dump = cleveland_dump()
    with RecordedAPI(Served(dump).route) as server:
        for fault in (too_many(3), SERVER_ERROR, Reply(200, dump.body, cut_at=len(dump.body) // 3)):
            server.fault(lambda s: s.path == DUMP_PATH, fault)
        summary = harvest(dump, server, tmp_path / "out", server.url + DUMP_PATH)
    assert summary.complete and adapter_rows("cleveland", summary.output) == dump.expected
    assert len(server.seen) == 4
    assert (tmp_path / "out" / "raw" / "dump" / "data.json").read_bytes() == dump.body


def test_a_dump_that_changed_under_a_harvest_is_refused(tmp_path):
    dump = cleveland_dump()
    with RecordedAPI(Served(dump).route) as server:
        source = where(dump, tmp_path, server, "file")
        harvest(dump, server, tmp_path / "out", source, limit=2)
        Path(source).write_bytes(cleveland_json(APIS["cleveland"]().records[:3]))
        with pytest.raises(ValueError, match="a different dump; pull it into a new folder"):
            harvest(dump, server, tmp_path / "out", source)


@pytest.mark.parametrize("adapter, body, message", [
    ("met", b"Object ID;Is Public Domain\n1;True\n", "not the Met's open-access CSV: no column 'Object ID'"),
    ("cleveland", b"id,accession_number,share_license_status\n1,2,CC0\n", "not a JSON array"),
    ("cleveland", b'[{"id": 1}, {"id": ', "not valid JSON after element 0"),
    ("aic", b'{"id": 1}', "not a readable tar archive"),
])
def test_a_file_that_is_not_the_dump_says_what_it_is_not(adapter, body, message, tmp_path):
    (tmp_path / "dump").write_bytes(body)
    harvest_settings = settings("http://127.0.0.1:9")
    with pytest.raises(ValueError, match=message):
        pull(adapter, adapter, harvest_settings, tmp_path / "out", dump=str(tmp_path / "dump"),
             client=fake_client(harvest_settings, FakeTime()))


def test_dump_pulls_refuse_what_they_cannot_do(tmp_path):
    (tmp_path / "data.json").write_bytes(b"[]")
    harvest_settings = settings("http://127.0.0.1:9")
    with pytest.raises(ValueError, match=r"no harvest from a dump \(--from-dump is for aic, cleveland, met\)"):
        pull("commons", "commons", harvest_settings, tmp_path / "a", dump=str(tmp_path / "data.json"))
    with pytest.raises(ValueError, match="takes no --query"):
        pull("cleveland", "cleveland", harvest_settings, tmp_path / "b", dump=str(tmp_path / "data.json"), query="q")
    with pytest.raises(ValueError, match="no such file"):
        pull("cleveland", "cleveland", harvest_settings, tmp_path / "c", dump=str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="no API base URL"):  # the Met's CSV only lists what to ask the API for
        pull("met", "met", harvest_settings.model_copy(update={"base_url": None}), tmp_path / "d",
             dump=str(tmp_path / "data.json"))
    without_api = harvest_settings.model_copy(update={"base_url": None})
    assert pull("cleveland", "cleveland", without_api, tmp_path / "e", dump=str(tmp_path / "data.json"),
                client=fake_client(without_api, FakeTime())).complete


def test_an_aic_dump_without_its_config_says_how_to_give_the_iiif_url(tmp_path):
    artwork = (FIXTURES / "art-institute-of-chicago" / "artworks" / "4.json").read_bytes()
    (tmp_path / "dump.tar.gz").write_bytes(aic_tar({"artworks/4.json": artwork}))
    harvest_settings = settings("http://127.0.0.1:9")
    summary = pull("aic", "aic", harvest_settings, tmp_path / "out", dump=str(tmp_path / "dump.tar.gz"),
                   client=fake_client(harvest_settings, FakeTime()))
    assert summary.complete and summary.records == 1
    [failure] = jsonl(tmp_path / "out" / FAILURES)
    assert failure["reason"] == "no_iiif_config" and "iiif_url option" in failure["detail"]


def test_pull_from_dump_on_the_command_line_prints_the_entry_that_reads_it(tmp_path, capsys):
    dump = aic_dump()
    (tmp_path / "artic-api-data.tar.gz").write_bytes(dump.body)
    code = cli.main(["sources", "pull", "aic", "--out", str(tmp_path / "out"), "--from-dump",
                     str(tmp_path / "artic-api-data.tar.gz"), "--contact", "someone@example.org"])
    printed = capsys.readouterr().out
    assert code == 0
    entry = yaml.safe_load(printed[printed.index("sources:"):])
    harvested = str((tmp_path / "out" / "artworks.jsonl").resolve())
    assert entry == {"sources": [{"manifest": "aic", "metadata": [harvested]}]}
    assert adapter_rows("aic", Path(entry["sources"][0]["metadata"][0])) == dump.expected


def ranged(body: bytes, etag: str = '"v1"'):
    """A file server that honours Range, with If-Range (the whole file again when the ETag differs)."""

    def route(seen):
        headers = {k.lower(): v for k, v in seen.headers.items()}
        asked = headers.get("range", "")
        if asked.startswith("bytes=") and headers.get("if-range", etag) == etag:
            start = int(asked[len("bytes="):].rstrip("-"))
            if start >= len(body):
                return Reply(416, b"", {"Content-Range": f"bytes */{len(body)}"})
            return Reply(206, body[start:], {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}",
                                             "ETag": etag})
        return Reply(200, body, {"ETag": etag})

    return route


def test_a_cut_off_dump_download_asks_only_for_the_rest(tmp_path):
    dump = cleveland_dump()
    with RecordedAPI(ranged(dump.body)) as server:
        server.fault(lambda s: True, Reply(200, dump.body, {"ETag": '"v1"'}, cut_at=len(dump.body) // 3))
        summary = harvest(dump, server, tmp_path / "out", server.url + DUMP_PATH)
    assert summary.complete and adapter_rows("cleveland", summary.output) == dump.expected
    first, second = ({k.lower(): v for k, v in s.headers.items()} for s in server.seen)
    assert "range" not in first
    assert second["range"] == f"bytes={len(dump.body) // 3}-" and second["if-range"] == '"v1"'
    assert sorted(p.name for p in (tmp_path / "out" / "raw" / "dump").iterdir()) == ["data.json"]


def test_a_pull_stopped_mid_download_continues_it_on_the_next_pull(tmp_path):
    dump = cleveland_dump()
    cut = len(dump.body) // 2
    with RecordedAPI(ranged(dump.body)) as server:
        for _ in range(3):  # the first try and both retries cut off
            server.fault(lambda s: True, Reply(200, dump.body, {"ETag": '"v1"'}, cut_at=cut))
        settings_ = settings(server.url, retries=2)
        stopped = pull("cleveland", "cleveland", settings_, tmp_path / "out", dump=server.url + DUMP_PATH,
                       client=fake_client(settings_, FakeTime()))
        assert not stopped.complete and "download cut off" in stopped.stopped_by
        assert (tmp_path / "out" / "raw" / "dump" / "data.json.part").stat().st_size == cut
        resumed = pull("cleveland", "cleveland", settings_, tmp_path / "out", dump=server.url + DUMP_PATH,
                       client=fake_client(settings_, FakeTime()))
    assert resumed.complete and adapter_rows("cleveland", resumed.output) == dump.expected
    last = {k.lower(): v for k, v in server.seen[-1].headers.items()}
    assert last["range"] == f"bytes={cut}-"


def test_a_dump_that_changed_on_the_server_mid_download_is_downloaded_again_whole(tmp_path):
    old, new = cleveland_dump().body, cleveland_json(APIS["cleveland"]().records[:4])
    with RecordedAPI(ranged(new, etag='"v2"')) as server:
        server.fault(lambda s: True, Reply(200, old, {"ETag": '"v1"'}, cut_at=len(old) // 2))
        summary = harvest(cleveland_dump(), server, tmp_path / "out", server.url + DUMP_PATH)
    assert summary.complete and summary.records == 4
    assert (tmp_path / "out" / "raw" / "dump" / "data.json").read_bytes() == new


def test_a_pull_killed_between_the_last_byte_and_the_rename_keeps_the_download(tmp_path, monkeypatch):
    from curate.harvest import client as client_module

    dump = cleveland_dump()
    replace = client_module.os.replace

    def killed(source, target):  # os is one module: every other rename goes on
        if str(source).endswith(".part"):
            raise Killed
        replace(source, target)

    with RecordedAPI(ranged(dump.body)) as server:
        monkeypatch.setattr(client_module.os, "replace", killed)
        with pytest.raises(Killed):
            harvest(dump, server, tmp_path / "out", server.url + DUMP_PATH)
        monkeypatch.setattr(client_module.os, "replace", replace)
        summary = harvest(dump, server, tmp_path / "out", server.url + DUMP_PATH)
    assert summary.complete and adapter_rows("cleveland", summary.output) == dump.expected
    assert len(server.seen) == 2
    last = {k.lower(): v for k, v in server.seen[-1].headers.items()}
    assert last["range"] == f"bytes={len(dump.body)}-"  # answered 416: nothing sent twice


@pytest.mark.parametrize("compression", ["bz2", "xz", ""])
def test_an_aic_dump_is_read_however_its_tar_is_compressed(compression, tmp_path):
    dump = aic_dump()
    with tarfile.open(fileobj=io.BytesIO(dump.body), mode="r:gz") as published:
        with tarfile.open(tmp_path / "dump.tar", f"w:{compression}") as tar:
            for member in published:
                tar.addfile(member, published.extractfile(member))
    harvest_settings = settings("http://127.0.0.1:9")
    summary = pull("aic", "aic", harvest_settings, tmp_path / "out", dump=str(tmp_path / "dump.tar"),
                   client=fake_client(harvest_settings, FakeTime()))
    assert summary.complete and adapter_rows("aic", summary.output) == dump.expected
