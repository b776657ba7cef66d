"""Stage timings and throughput: the seconds each step of the run took (``OUT/timings.json``, written by
``curate.progress.StepTimes`` as the run goes) beside the records it took in and passed on, which come
from ``stats.json``'s counts per stage, so both are read from the run folder and the page can be made again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from curate import progress, stages
from curate.runfolder import RunFolder

# What each step of ``curate.run.Run`` does, in the order a run makes them.
ABOUT = {
    "ingest": "read the sources' metadata, apply the license policy",
    "fetch": "host rights checks and downloads",
    stages.FILTER_STEP: "the pipeline's record filters",
    "score": "CLIP embeddings, score heads and thresholds, perceptual hashes",
    "dedup": "exact and near duplicates",
    "caption": "captions and their similarity to the image",
    "shards": "shard assignment",
    "write": "webdataset shards written",
}
# The stages of stats.json's by_stage whose records each step decides (the filters step: the pipeline's filters).
COUNTED_IN = {"ingest": ("ingest", "policy"), "fetch": ("fetch",), "score": ("score",), "dedup": ("dedup",),
              "caption": ("caption",), "shards": ("shards",), "write": ("shards",)}


@dataclass(frozen=True)
class StepTime:
    step: str
    seconds: float | None  # None: resumed from an invocation that did not record it
    cpu_seconds: float | None
    resumed: bool  # made by an earlier invocation of the run
    records_in: int | None
    records_out: int | None

    @property
    def per_second(self) -> float | None:
        if self.records_in is None or not self.seconds:
            return None
        return self.records_in / self.seconds


def counts(step: str, by_stage: dict[str, dict[str, Any]]) -> tuple[int | None, int | None]:
    """(records in, records out) of ``step``: what entered its first stage and what left its last."""
    filters = [name for name in by_stage if name not in stages.ORDER]
    counted = [name for name in (filters if step == stages.FILTER_STEP else COUNTED_IN.get(step, ()))
               if name in by_stage]
    if not counted:
        return None, None
    first, last = by_stage[counted[0]], by_stage[counted[-1]]
    # The last stage (shards) has no "out": assignment passes every record on, writing leaves the samples.
    out = last.get("written") if step == "write" else last.get("out", last.get("in"))
    return first.get("in"), out


def step_times(folder: RunFolder) -> list[StepTime]:
    """Every step the run recorded, in the order it ran."""
    by_stage = folder.stats()["by_stage"]
    found = []
    for step, times in progress.read(folder.root).items():
        records_in, records_out = counts(step, by_stage)
        found.append(StepTime(step, times.get("seconds"), times.get("cpu_seconds"), bool(times.get("resumed")),
                              records_in, records_out))
    return found
