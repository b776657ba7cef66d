"""Progress a person can follow in a log: periodic plain lines while a step writes its records.

On a terminal Ray Data draws its own bars (``curate.run.ray_session``); a log file or a CI
console gets these lines instead, one a minute by default: records written so far, the rate
since the step started and, when the step knows how many records it will write, the time left.
Rows are counted from the parquet footers in the step's scratch folder (Ray writes a file per
finished block), so a line costs one footer read per file written, never a scan of the data.

What each step cost is kept in ``OUT/timings.json`` (``StepTimes``): wall and CPU seconds per step,
written as each step finishes, so a resumed run keeps the times of the steps an earlier invocation
made (marked ``resumed``) and ``cleanroom report OUT`` can show them again later.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow.parquet as pq

from curate.io import write_text_atomic

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


TIMINGS = "timings.json"


def cpu_seconds() -> float:
    """CPU time of this process, all its threads (DuckDB's) and its finished child processes (img2dataset's)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class Timer:
    """One step being timed; work done elsewhere (Ray's workers) is added with ``add_cpu``."""

    def __init__(self, clock: Callable[[], float], cpu: Callable[[], float]):
        self.clock, self.cpu = clock, cpu
        self.started, self.cpu_started, self.elsewhere = clock(), cpu(), 0.0

    def add_cpu(self, seconds: float) -> None:
        self.elsewhere += seconds

    def result(self) -> dict[str, Any]:
        return {"seconds": self.clock() - self.started,
                "cpu_seconds": self.cpu() - self.cpu_started + self.elsewhere, "resumed": False}


class StepTimes:
    """``OUT/timings.json``: step -> its wall seconds, CPU seconds and whether this invocation made it.

    Saved after every step, so the times of finished steps outlive an invocation that dies later.
    """

    def __init__(self, root: Path, clock: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = cpu_seconds):
        self.path, self.clock, self.cpu = root / TIMINGS, clock, cpu
        self.steps = read(root)

    def resumed(self, step: str) -> None:
        """``step`` was finished by an earlier invocation: its times stay as that one measured them, if it did."""
        earlier = self.steps.get(step, {"seconds": None, "cpu_seconds": None})
        self.steps[step] = {**earlier, "resumed": True}
        self._save()

    @contextmanager
    def timed(self, step: str) -> Iterator[Timer]:
        """Time the ``with`` block as ``step``; a block that raises records nothing (the step is redone)."""
        timer = Timer(self.clock, self.cpu)
        yield timer
        self.steps[step] = timer.result()
        self._save()

    def _save(self) -> None:
        write_text_atomic(json.dumps({"steps": self.steps}, indent=2), self.path)


def read(root: Path) -> dict[str, dict[str, Any]]:
    """The step times a run in ``root`` recorded, in the order its steps ran; empty when it recorded none."""
    path = root / TIMINGS
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())["steps"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a step timings file ({e})") from None
