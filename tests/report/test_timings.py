"""Stage timings and throughput: every step a run makes is timed in OUT/timings.json, and the report shows
each step's seconds beside the records it took in and passed on, resumed steps marked."""

from __future__ import annotations

import json
import re
import shutil

from curate import progress, report
from curate.report import page, timings
from curate.runfolder import RunFolder

DEMO_STEPS = ["ingest", "fetch", "filters", "score", "dedup", "caption", "shards", "write"]


def table_rows(index: str) -> dict[str, list[str]]:
    """The timings table's rows on the page, by step: the text of each cell."""
    section = index[index.index('id="timings"'):]
    table = section[:section.index("</table>")]
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)]
    return {cells[0]: cells for cells in rows if cells}


def test_the_demo_run_times_every_step_it_made_and_the_page_shows_them(demo_out):
    steps = progress.read(demo_out)
    assert list(steps) == DEMO_STEPS
    for step, times in steps.items():
        assert times["resumed"] is False, step
        assert times["seconds"] > 0 and times["cpu_seconds"] > 0, (step, times)
    by_stage = RunFolder.at(demo_out).stats()["by_stage"]
    shown = table_rows((demo_out / report.FOLDER / page.INDEX).read_text())
    assert list(shown) == DEMO_STEPS
    total = json.loads((demo_out / "stats.json").read_text())["records"]
    assert shown["ingest"][5] == f"{total:,}"  # records in: every input record
    assert shown["write"][6] == f"{by_stage['shards']['written']:,}"  # records out: the samples in the shards
    assert shown["dedup"][5:7] == [f"{by_stage['dedup']['in']:,}", f"{by_stage['dedup']['out']:,}"]
    assert all(cells[2] == "this invocation" and cells[3] and cells[7] for cells in shown.values())


def test_resumed_steps_keep_their_times_and_say_so(credited_run):
    out = credited_run["out"]
    (out / progress.TIMINGS).write_text(json.dumps({"steps": {
        "ingest": {"seconds": 2.0, "cpu_seconds": 1.5, "resumed": True},
        "fetch": {"seconds": None, "cpu_seconds": None, "resumed": True},
        "dedup": {"seconds": 0.5, "cpu_seconds": 0.25, "resumed": False}}}))
    index = report.write(out)["report"].read_text()
    shown = table_rows(index)
    records = RunFolder.at(out).stats()["records"]
    assert shown["ingest"][2:6] == ["resumed", "2.0", "1.5", f"{records}"]
    assert shown["ingest"][7] == f"{records / 2.0:,.1f}"
    assert shown["fetch"][2:5] == ["resumed", "", ""]  # an earlier invocation that did not time it
    assert shown["dedup"][2] == "this invocation"
    assert "Resumed: ingest, fetch, made by an earlier invocation" in index
    assert "ingest (resumed)" in index and "fetch (resumed)" not in index  # the plot draws timed steps only


def test_a_run_without_timings_says_so(credited_run):
    index = report.write(credited_run["out"])["report"].read_text()
    assert "This run recorded no step timings." in index


def test_a_step_counts_the_records_of_its_stages():
    by_stage = {"ingest": {"in": 10, "out": 9}, "policy": {"in": 9, "out": 7}, "fetch": {"in": 7, "out": 6},
                "resolution": {"in": 6, "out": 5}, "robots_txt": {"in": 5, "out": 5},
                "score": {"in": 5, "out": 5}, "dedup": {"in": 5, "out": 4}, "caption": {"in": 4, "out": 4},
                "shards": {"in": 4, "written": 4}}
    assert timings.counts("ingest", by_stage) == (10, 7)
    assert timings.counts("filters", by_stage) == (6, 5)
    assert timings.counts("shards", by_stage) == (4, 4)
    assert timings.counts("write", by_stage) == (4, 4)
    assert timings.counts("filters", {k: v for k, v in by_stage.items() if k not in ("resolution", "robots_txt")}) \
        == (None, None)


def test_a_resumed_run_keeps_the_times_of_the_steps_it_did_not_redo(credited_run, tmp_path):
    from curate.run import Run

    out = tmp_path / "out"
    (out / "work" / "ingest").mkdir(parents=True)  # finished by the first invocation, which timed it
    shutil.copy(credited_run["out"] / "run.yaml", out / "run.yaml")
    (out / progress.TIMINGS).write_text(json.dumps({"steps": {
        "ingest": {"seconds": 8.0, "cpu_seconds": 2.0, "resumed": False}}}))
    folder = RunFolder.at(out)
    again = Run(folder.config(), folder)

    def not_again(into):
        raise AssertionError("a finished step made again")

    again.stage("ingest", not_again)
    again.stage("dedup", lambda into: (into / "decisions.parquet").write_bytes(b"made now"))
    steps = progress.read(out)
    assert steps["ingest"] == {"seconds": 8.0, "cpu_seconds": 2.0, "resumed": True}
    assert steps["dedup"]["resumed"] is False and steps["dedup"]["seconds"] is not None
    assert (out / "work" / "dedup" / "decisions.parquet").read_bytes() == b"made now"
