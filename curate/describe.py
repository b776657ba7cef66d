"""What a run's pipeline does, in the lines the dataset and model cards print.

Every line is computed from the run's resolved config, so
a card cannot describe a filter the run did not apply or miss one it did: each record filter
and the score stage say what they keep through their own ``describe()``.
"""

from __future__ import annotations

import re
from pathlib import Path

from curate import stages
from curate.config import RunConfig
from curate.score.filter import ScoreThresholds


# A folder path in a line (a weights file, a policy file): cards name the file, not the machine it was on.
_FOLDERS = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[/\\](?:[^/\\\s`:]+[/\\])+(?=[^/\\\s`:]+)")


def pipeline_lines(config: RunConfig) -> list[str]:
    """Markdown bullets: the license policy, every filter in run order, scoring and dedup."""
    lines = [f"- License policy: `{config.pipeline.policy}` ({Path(config.policy_file).name}).",
             *(f"- {record_filter.describe()}" for record_filter in stages.configured(config.pipeline.filters))]
    return [without_folders(line) for line in lines + scoring_lines(config) + dedup_lines(config)]


def without_folders(line: str) -> str:
    return _FOLDERS.sub("", line)


def scoring_lines(config: RunConfig) -> list[str]:
    scoring = config.pipeline.scoring
    if scoring is None:
        return ["- Scoring: none (no aesthetic, watermark or NSFW filter)."]
    return [f"- {line}" for line in ScoreThresholds(scoring).describe_lines()]


def dedup_lines(config: RunConfig) -> list[str]:
    dedup = config.pipeline.dedup
    phash, clip = dedup.near.phash, dedup.near.clip
    parts = ["exact (sha256)" if dedup.exact else "no exact dedup",
             f"pHash within {phash.max_distance} of 64 bits" if phash else "no pHash dedup",
             (f"CLIP cosine above {clip.threshold} (nprobe {clip.nprobe}"
              + (f", against {len(clip.against)} earlier run{'s' if len(clip.against) != 1 else ''})"
                 if clip.against else ")")) if clip
             else "no CLIP dedup"]
    return [f"- Deduplication: {', '.join(parts)}."]
