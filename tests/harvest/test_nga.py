"""NGA: the open-data CSVs downloaded whole, through faults and a dropped connection, resumable."""

from __future__ import annotations

import pytest

from curate.harvest.cursor import Cursor
from curate.harvest.pull import pull
from curate.harvest.settings import HarvestSettings

from .apis import adapter_rows
from .conftest import FIXTURES, SERVER_ERROR, FakeTime, RecordedAPI, Reply, fake_client, settings, slow, too_many

DATA = FIXTURES / "national-gallery-of-art"
PATH = "/NationalGalleryOfArt/opendata/raw/main/data"


def route(seen):
    name = seen.path.rsplit("/", 1)[1]
    if name in ("objects.csv", "published_images.csv"):
        return Reply(200, (DATA / name).read_bytes(), {"Content-Type": "text/csv"})
    return Reply(404, b"no such file")


def run(server, out, time_=None, **kwargs):
    harvest: HarvestSettings = settings(server.url + PATH, retries=6, timeout_s=1.0)
    return pull("nga", "nga", harvest, out, client=fake_client(harvest, time_ or FakeTime()), **kwargs)


def test_both_csvs_arrive_whole_through_faults_and_read_as_published(tmp_path):
    images = (DATA / "published_images.csv").read_bytes()
    time_ = FakeTime()
    with RecordedAPI(route) as server:
        for fault in (too_many(7), SERVER_ERROR, slow(1.6),
                      Reply(200, images, {"Content-Length": str(len(images))}, cut_at=len(images) // 2)):
            server.fault(lambda s: s.path.endswith("/published_images.csv"), fault)
        summary = run(server, tmp_path / "out", time_)
    assert summary.complete and summary.failures == 0
    for name in ("objects.csv", "published_images.csv"):
        assert (tmp_path / "out" / name).read_bytes() == (DATA / name).read_bytes()
    assert summary.output.resolve() == (tmp_path / "out").resolve()
    assert adapter_rows("nga", summary.output) == adapter_rows("nga", DATA)
    assert any(s == pytest.approx(7) for s in time_.sleeps)
    assert not list((tmp_path / "out").glob(".*.tmp"))  # the cut-off download left nothing behind


def test_a_pull_killed_before_the_second_file_was_noted_asks_only_for_that_file_again(tmp_path, monkeypatch):
    original_save, saves = Cursor.save, iter(range(100))

    def save(self, folder):
        if next(saves) == 2:  # the first save is the new cursor's, the second notes objects.csv
            raise KeyboardInterrupt
        original_save(self, folder)

    with RecordedAPI(route) as server:
        monkeypatch.setattr(Cursor, "save", save)
        with pytest.raises(KeyboardInterrupt):
            run(server, tmp_path / "out")
        monkeypatch.setattr(Cursor, "save", original_save)
        assert run(server, tmp_path / "out").complete
    assert [s.path.rsplit("/", 1)[1] for s in server.seen] == ["objects.csv", "published_images.csv",
                                                               "published_images.csv"]
    assert adapter_rows("nga", tmp_path / "out") == adapter_rows("nga", DATA)


def test_the_csvs_take_no_query(tmp_path):
    with RecordedAPI(route) as server, pytest.raises(ValueError, match="takes no --query"):
        run(server, tmp_path / "out", query="monet")
