"""Plain progress lines for logs: records so far, the rate, the time left; and each step's times, kept."""

import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate import progress


def test_a_line_gives_count_rate_and_time_left():
    assert progress.line("stage score", 2500, 10000, 50.0) == (
        "stage score: 2,500 records of 10,000 in 50 s, 50.0/s, about 150 s left")
    assert progress.line("stage ingest", 300, None, 10.0) == "stage ingest: 300 records in 10 s, 30.0/s"


def test_rows_are_counted_from_finished_files_only(tmp_path):
    pq.write_table(pa.table({"key": ["a", "b", "c"]}), tmp_path / "1.parquet")
    (tmp_path / "2.parquet").write_bytes(b"PAR1 half written")
    assert progress.rows_written(tmp_path) == 3


def test_the_step_ends_with_a_done_line(tmp_path, caplog):
    ticks = iter([0.0, 4.0])
    with caplog.at_level(logging.INFO, logger="cleanroom.progress"):
        with progress.Progress("stage caption", tmp_path, 3, every=3600, clock=lambda: next(ticks)):
            pq.write_table(pa.table({"key": ["a", "b", "c"]}), tmp_path / "part.parquet")
    assert caplog.messages == ["stage caption: 3 records of 3 in 4 s, 0.8/s (done)"]


class Ticks:
    """A clock that moves only when told, for wall and CPU seconds alike."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_step_times_are_saved_as_each_step_ends_and_kept_when_a_run_resumes(tmp_path):
    wall, cpu = Ticks(), Ticks()
    first = progress.StepTimes(tmp_path, clock=wall, cpu=cpu)
    with first.timed("ingest") as timer:
        wall.now, cpu.now = 10.0, 4.0
        timer.add_cpu(6.0)  # what Ray's workers spent
    assert progress.read(tmp_path) == {"ingest": {"seconds": 10.0, "cpu_seconds": 10.0, "resumed": False}}
    with pytest.raises(RuntimeError), first.timed("fetch"):
        wall.now = 30.0
        raise RuntimeError("the invocation dies inside fetch")
    assert list(progress.read(tmp_path)) == ["ingest"]  # a step that did not finish has no time

    again = progress.StepTimes(tmp_path, clock=wall, cpu=cpu)
    again.resumed("ingest")
    again.resumed("filters")  # finished by a version that did not time its steps
    with again.timed("fetch"):
        wall.now = 33.0
    assert progress.read(tmp_path) == {
        "ingest": {"seconds": 10.0, "cpu_seconds": 10.0, "resumed": True},
        "filters": {"seconds": None, "cpu_seconds": None, "resumed": True},
        "fetch": {"seconds": 3.0, "cpu_seconds": 0.0, "resumed": False}}


def test_a_timings_file_that_is_not_one_is_named(tmp_path):
    (tmp_path / progress.TIMINGS).write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a step timings file") as raised:
        progress.read(tmp_path)
    assert str(raised.value).startswith(str(tmp_path / progress.TIMINGS))
