"""Plain progress lines for logs: records so far, the rate, the time left."""

import logging

import pyarrow as pa
import pyarrow.parquet as pq

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
