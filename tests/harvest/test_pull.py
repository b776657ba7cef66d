"""Every harvester against its recorded API on 127.0.0.1: complete through faults, polite, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.harvest import pull as pull_module
from curate.harvest.client import PoliteClient
from curate.harvest.cursor import Cursor
from curate.harvest.pull import FAILURES, RAW_INDEX, Summary, harvester, pull

from .apis import API, APIS, BASE_PATHS, KEY, KEY_ENV, adapter_rows
from .conftest import CONTACT, MALFORMED, SERVER_ERROR, FakeTime, RecordedAPI, Reply, fake_client, jsonl, settings, \
    slow, too_many

# Harvests that page through one listing (the Met asks per object; Getty per object of each stream page).
LISTINGS = ("commons", "cleveland", "aic", "smithsonian", "finna", "flickr", "walters", "getty")


@pytest.fixture(params=sorted(APIS))
def api(request, monkeypatch) -> API:
    monkeypatch.setenv(KEY_ENV, KEY)  # for the APIs that need a key
    return APIS[request.param]()


def harvest(api: API, server: RecordedAPI, out: Path, time_: FakeTime | None = None, *, limit: int | None = None,
            **changes) -> Summary:
    harvest_settings = settings(server.url + BASE_PATHS[api.adapter],
                                **{"page_size": api.page_size, **api.settings, **changes})
    client = fake_client(harvest_settings, time_) if time_ else PoliteClient(harvest_settings, CONTACT)
    return pull(api.adapter, api.adapter, harvest_settings, out, limit=limit, client=client)


def output(api: API, out: Path) -> Path:
    return out / harvester(api.adapter).OUTPUT


def test_harvest_completes_through_every_fault_and_reads_as_the_recorded_records(api, tmp_path, fake_time):
    with RecordedAPI(api.route) as server:
        for fault in (too_many(7), SERVER_ERROR, slow(1.6), MALFORMED):
            server.fault(api.second_page, fault)
        summary = harvest(api, server, tmp_path / "out", fake_time, retries=6, timeout_s=1.0)
    assert summary.complete and summary.failures == 0
    assert summary.records == len(api.records)
    assert adapter_rows(api.adapter, output(api, tmp_path / "out")) == api.expected()
    # The 429's Retry-After was waited in full; the other faults got the short exponential backoff.
    assert any(s == pytest.approx(7) for s in fake_time.sleeps)
    assert all(s < 1 for s in fake_time.sleeps if s != pytest.approx(7))
    # Four faults, then the page (a retry more, should a busy machine time out a page: a timeout is a fault).
    assert len([s for s in server.seen if api.second_page(s)]) >= 5
    assert all(CONTACT in s.headers["User-Agent"] for s in server.seen)
    index = jsonl(tmp_path / "out" / RAW_INDEX)
    asked = {(s.path, tuple(sorted(s.params.items()))) for s in server.seen}
    assert len(index) == summary.pages == len(asked) == len({e["url"] for e in index})  # each page kept once
    assert all((tmp_path / "out" / entry["file"]).is_file() for entry in index)


def test_requests_keep_to_the_rate_limit_as_the_server_measures_it(api, tmp_path):
    rate = 10.0
    with RecordedAPI(api.route) as server:
        summary = harvest(api, server, tmp_path / "out", requests_per_second=rate, page_size=1, concurrency=3)
    assert summary.complete
    arrivals = sorted(s.at for s in server.seen)
    assert len(arrivals) >= 5
    # Over any four or more intervals, no more requests than the rate allows, less a quarter for a busy
    # loopback (a client without a limit sends them all within a few milliseconds).
    assert all(later - earlier >= 0.75 * (j - i) / rate
               for i, earlier in enumerate(arrivals) for j, later in enumerate(arrivals) if j - i >= 4)


class Killed(BaseException):
    """A kill at a chosen moment: raised where the cursor would be saved, after the step's files were written."""


def test_a_pull_killed_at_any_step_and_run_again_duplicates_nothing(api, tmp_path, monkeypatch):
    original_save = Cursor.save
    saved = []
    monkeypatch.setattr(Cursor, "save", lambda self, folder: saved.append(original_save(self, folder)))
    with RecordedAPI(api.route) as server:
        clean = harvest(api, server, tmp_path / "clean", FakeTime())
        for kill_at in range(len(saved)):  # at every save of a whole pull
            out = tmp_path / f"killed-{kill_at}"
            saves = iter(range(10_000))

            def save(self, folder, kill_at=kill_at):
                if next(saves) == kill_at:
                    if kill_at > 0:  # past the first save, a line may be half written when it dies
                        with open(output(api, folder), "ab") as torn:
                            torn.write(b'{"torn": ')
                    raise Killed
                original_save(self, folder)

            monkeypatch.setattr(Cursor, "save", save)
            try:
                harvest(api, server, out, FakeTime())
            except Killed:
                pass
            monkeypatch.setattr(Cursor, "save", original_save)
            again = harvest(api, server, out, FakeTime())
            assert again.complete and again.records == clean.records
            assert output(api, out).read_bytes() == output(api, tmp_path / "clean").read_bytes()
            assert not (out / FAILURES).exists() or jsonl(out / FAILURES) == []
    assert adapter_rows(api.adapter, output(api, tmp_path / "clean")) == api.expected()


def test_a_limited_pull_then_a_full_one_gives_every_record_once(api, tmp_path):
    with RecordedAPI(api.route) as server:
        clean = harvest(api, server, tmp_path / "clean", FakeTime())
        first = harvest(api, server, tmp_path / "out", FakeTime(), limit=3)
        assert first.complete and first.records == 3 and len(jsonl(output(api, tmp_path / "out"))) == 3
        before = len(server.seen)
        assert harvest(api, server, tmp_path / "out", FakeTime(), limit=3).records == 3
        assert len(server.seen) == before  # the limit was reached: nothing asked again
        rest = harvest(api, server, tmp_path / "out", FakeTime())
        assert rest.complete and rest.records == clean.records
        assert output(api, tmp_path / "out").read_bytes() == output(api, tmp_path / "clean").read_bytes()
        done = len(server.seen)
        assert harvest(api, server, tmp_path / "out", FakeTime()).records == clean.records
        assert len(server.seen) == done  # a finished harvest is a no-op


@pytest.mark.parametrize("name", LISTINGS)
def test_a_page_that_keeps_failing_is_recorded_and_a_rerun_continues_from_it(name, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    api = APIS[name]()
    broken = {"on": True}

    def route(seen):
        if broken["on"] and api.second_page(seen):
            return Reply(503, b"down for maintenance")
        return api.route(seen)

    with RecordedAPI(route) as server:
        stopped = harvest(api, server, tmp_path / "out", FakeTime(), retries=2)
        assert not stopped.complete and "HTTP 503" in stopped.stopped_by
        assert len([s for s in server.seen if api.second_page(s)]) == 3  # the first try and two retries
        [failure] = jsonl(tmp_path / "out" / FAILURES)
        assert failure["reason"] == "HTTP 503" and failure["attempts"] == 3 and failure["status"] == 503
        assert failure["body"] == "down for maintenance"
        assert 0 < stopped.records < len(api.records)
        broken["on"] = False
        resumed = harvest(api, server, tmp_path / "out", FakeTime())
    assert resumed.complete and resumed.records == len(api.records)
    assert adapter_rows(api.adapter, output(api, tmp_path / "out")) == api.expected()


def test_a_folder_holds_one_harvest(tmp_path):
    api = APIS["cleveland"]()
    with RecordedAPI(api.route) as server:
        harvest(api, server, tmp_path / "out", FakeTime(), limit=2)
        base = server.url + BASE_PATHS["cleveland"]
        other = settings(base, page_size=5, params={"type": "Painting"})
        with pytest.raises(ValueError, match=r"another harvest \(params: \{\} there"):
            pull("cleveland", "cleveland", other, tmp_path / "out", client=fake_client(other, FakeTime()))
        with pytest.raises(ValueError, match="query: None there, 'cole' now"):
            pull("cleveland", "cleveland", settings(base), tmp_path / "out", query="cole",
                 client=fake_client(settings(base), FakeTime()))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "artworks.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(ValueError, match="artworks.jsonl but no cursor.json"):
        pull("cleveland", "cleveland", settings("http://127.0.0.1:9"), mine)
    assert (mine / "artworks.jsonl").read_text() == '{"id": 1}\n'


def test_a_pull_needs_a_contact_and_a_base_url(tmp_path):
    with pytest.raises(ValueError, match="no contact for the User-Agent: pass --contact"):
        pull("met", "met", settings("http://127.0.0.1:9", contact=None), tmp_path / "a")
    with pytest.raises(ValueError, match="no API base URL"):
        pull("met", "met", settings("http://127.0.0.1:9").model_copy(update={"base_url": None}), tmp_path / "b")
    with pytest.raises(ValueError, match="no harvester for adapter 'local'"):
        pull("local", "local", settings("http://127.0.0.1:9"), tmp_path / "c")


def test_the_sources_entry_reads_the_harvest(tmp_path):
    api = APIS["met"]()
    with RecordedAPI(api.route) as server:
        summary = harvest(api, server, tmp_path / "out", FakeTime())
    entry = pull_module.yaml.safe_load(summary.sources_entry())
    harvested = str((tmp_path / "out" / "objects.jsonl").resolve())
    assert entry == {"sources": [{"manifest": "met", "metadata": [harvested]}]}
    assert adapter_rows("met", Path(entry["sources"][0]["metadata"][0])) == api.expected()
    settings_file = pull_module.yaml.safe_load((tmp_path / "out" / "harvest.yaml").read_text())
    assert CONTACT in settings_file["user_agent"] and settings_file["identity"]["source"] == "met"
    assert json.loads((tmp_path / "out" / "object-ids.json").read_text()) == [o["objectID"] for o in api.records]


@pytest.mark.parametrize("name", ["smithsonian", "flickr"])
def test_an_api_key_comes_from_the_environment_and_is_written_nowhere(name, tmp_path, monkeypatch):
    api = APIS[name]()
    monkeypatch.delenv(KEY_ENV, raising=False)
    with RecordedAPI(api.route) as server:
        with pytest.raises(ValueError, match=f"set the environment variable {KEY_ENV}"):
            harvest(api, server, tmp_path / "out", FakeTime())
        with pytest.raises(ValueError, match="needs a key: name the environment variable"):
            harvest(api, server, tmp_path / "out", FakeTime(), api_key_env=None)
        assert server.seen == []
        monkeypatch.setenv(KEY_ENV, KEY)
        server.fault(api.second_page, SERVER_ERROR)
        assert harvest(api, server, tmp_path / "out", FakeTime()).complete
    assert all(s.params["api_key"] == KEY for s in server.seen)
    written = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert KEY.encode() not in written and b"api_key=%2A%2A%2A" in written
