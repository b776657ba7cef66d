"""Scoring config, the heads on embeddings as one stage, and the threshold decisions.

``ScoringConfig`` is the ``scoring:`` block of a pipeline: which open_clip model embeds,
which heads score, each with its threshold. ``EmbeddingHeads(config)`` loads every head
on embeddings (aesthetic, NSFW) and checks it against the embedder's width and the
watermark weights against their architecture, so a wrong file fails when the stage is
built in the driver, before any image is read. ``ScoreFilter`` turns scores into
``rejected`` records with reasons ``nsfw``, ``watermark``, ``low_aesthetic`` (checked in that
order; the first that fails names the record's fate) and a detail that names the score,
the threshold and the model behind it.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from curate import records
from curate.score import aesthetic, embed, nsfw, watermark
from curate.score.aesthetic import AestheticConfig
from curate.score.clip import ClipSpec
from curate.score.nsfw import NsfwConfig
from curate.score.watermark import WatermarkConfig


class ScoringConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clip: ClipSpec
    batch_size: int = Field(32, ge=1)  # images per forward pass of the embedder
    # Fields named like the modules: annotations use the imported class names.
    aesthetic: AestheticConfig | None = None
    watermark: WatermarkConfig | None = None
    nsfw: NsfwConfig | None = None

    def describe(self) -> dict[str, str]:
        """The model behind each score column, for the run's stats and the shard manifests."""
        models = {embed.EMBEDDING: self.clip.describe()}
        if self.aesthetic:
            models[aesthetic.SCORE] = f"{self.aesthetic.describe()} on {self.clip.describe()}"
        if self.watermark:
            models[watermark.SCORE] = self.watermark.describe()
        if self.nsfw:
            models[nsfw.SCORE] = self.nsfw.describe(self.clip)
        return models


class EmbeddingHeads:
    """Stage: ``embedding`` -> the configured head scores. Built in the driver: it checks every file."""

    def __init__(self, config: ScoringConfig):
        dim = embed.embed_dim(config.clip)
        if config.clip.checkpoint and not Path(config.clip.checkpoint).is_file():
            raise FileNotFoundError(f"{config.clip.checkpoint}: checkpoint for {config.clip.model} not found")
        self.heads = []
        if config.aesthetic:
            self.heads.append(aesthetic.Aesthetic(config.aesthetic, dim))
        if config.nsfw:
            self.heads.append(nsfw.build_stage(config.nsfw, config.clip, dim))
        if config.watermark:
            watermark.load(config.watermark.weights)  # only checked here; the Watermark actor loads it

    def __call__(self, batch: pa.Table) -> pa.Table:
        for head in self.heads:
            batch = head(batch)
        return batch


def _limits(config: ScoringConfig) -> list[tuple[str, str, str, float, str]]:
    """(score column, reason, comparison that rejects, threshold, model) for each threshold set."""
    limits = []
    if config.nsfw and config.nsfw.max_pnsfw is not None:
        limits.append((nsfw.SCORE, "nsfw", ">=", config.nsfw.max_pnsfw, config.nsfw.describe(config.clip)))
    if config.watermark and config.watermark.max_pwatermark is not None:
        limits.append((watermark.SCORE, "watermark", ">=", config.watermark.max_pwatermark,
                       config.watermark.describe()))
    if config.aesthetic and config.aesthetic.min_score is not None:
        limits.append((aesthetic.SCORE, "low_aesthetic", "<=", config.aesthetic.min_score,
                       config.aesthetic.describe()))
    return limits


class ScoreFilter:
    """Stage: reject pending records whose scores cross the pipeline's thresholds."""

    def __init__(self, config: ScoringConfig):
        self.limits = _limits(config)

    def verdict(self, row: dict) -> tuple[str, str] | None:
        for column, reason, rejects, threshold, model in self.limits:
            score = row[column]
            if score is None or math.isnan(score):
                raise ValueError(f"record {row['key']}: pending but its {column} score is {score} (was it scored?)")
            if (score >= threshold) if rejects == ">=" else (score <= threshold):
                keeps = "<" if rejects == ">=" else ">"
                return reason, f"{column} {score:.4f}, kept only {keeps} {threshold} ({model})"
        return None

    def __call__(self, table: pa.Table) -> pa.Table:
        table = records.conform(table)
        rows = table.to_pylist()
        for row, is_pending in zip(rows, pc.equal(table["status"], records.PENDING).to_pylist()):
            if is_pending:
                verdict = self.verdict(row)
                if verdict:
                    records.finish(row, records.REJECTED, *verdict)
        return pa.Table.from_pylist(rows, schema=table.schema)
