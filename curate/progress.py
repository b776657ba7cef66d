"""Progress a person can follow in a log: periodic plain lines while a step writes its records.

On a terminal Ray Data draws its own bars (``curate.run.ray_session``); a log file or a CI
console gets these lines instead, one a minute by default: records written so far, the rate
since the step started and, when the step knows how many records it will write, the time left.
Rows are counted from the parquet footers in the step's scratch folder (Ray writes a file per
finished block), so a line costs one footer read per file written, never a scan of the data.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

log = logging.getLogger("cleanroom.progress")


def rows_written(folder: Path) -> int:
    """Rows in the finished parquet files under ``folder`` (files still being written are skipped)."""
    total = 0
    for path in folder.rglob("*.parquet"):  # partitioned steps (shards) write into subfolders
        try:
            total += pq.read_metadata(path).num_rows
        except (OSError, ValueError):  # a file Ray has not finished writing yet
            continue
    return total


def line(step: str, done: int, total: int | None, seconds: float) -> str:
    rate = done / seconds if seconds > 0 else 0.0
    text = f"{step}: {done:,} records" + (f" of {total:,}" if total else "") + f" in {seconds:.0f} s, {rate:,.1f}/s"
    if total and rate > 0 and done < total:
        text += f", about {(total - done) / rate:.0f} s left"
    return text


class Progress:
    """While the ``with`` block runs, log ``line`` every ``every`` seconds for the records in ``folder``."""

    def __init__(self, step: str, folder: Path, total: int | None, every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.step, self.folder, self.total, self.every, self.clock = step, folder, total, every, clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._report, name=f"progress-{step}", daemon=True)

    def __enter__(self) -> "Progress":
        self.started = self.clock()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            log.info("%s (done)", self.current())

    def current(self) -> str:
        return line(self.step, rows_written(self.folder), self.total, self.clock() - self.started)

    def _report(self) -> None:
        while not self._stop.wait(self.every):
            log.info(self.current())
