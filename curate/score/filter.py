"""Scoring config, the heads on embeddings as one stage, and the threshold decisions.

``ScoringConfig`` is the ``scoring:`` block of a pipeline: which open_clip model embeds,
which heads score, each with its threshold. ``EmbeddingHeads(config)`` loads every head
on embeddings (aesthetic, NSFW) and checks it against the embedder's width and the
watermark weights against their architecture, so a wrong file fails when the stage is
built in the driver, before any image is read. ``ScoreThresholds``, the score stage's
decision on the record-filter contract (``curate.stages``), turns scores into
``rejected`` records with reasons ``nsfw``, ``watermark``, ``low_aesthetic`` (checked in that
order; the first that fails names the record's fate) and a detail that names the score,
the threshold and the model behind it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from curate import stages
from curate.score import aesthetic, embed, nsfw, watermark
from curate.score.aesthetic import AestheticConfig
from curate.score.clip import ClipSpec
from curate.score.nsfw import NsfwConfig
from curate.score.watermark import WatermarkConfig

STAGE = "score"


class ScoringConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clip: ClipSpec = Field(description="The open_clip model whose image embeddings the heads score.")
    batch_size: int = Field(32, ge=1, description="Images per forward pass of the embedder.")
    # Fields named like the modules: annotations use the imported class names.
    aesthetic: AestheticConfig | None = Field(None, description="The aesthetic score; none: not scored.")
    watermark: WatermarkConfig | None = Field(None, description="The watermark probability; none: not scored.")
    nsfw: NsfwConfig | None = Field(None, description="The NSFW probability, by `kind`; none: not scored.")

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


@dataclass(frozen=True)
class Limit:
    column: str  # the score
    reason: str
    rejects_at_or_above: bool  # else at or below
    threshold: float
    model: str

    def crossed(self, score: float) -> bool:
        return score >= self.threshold if self.rejects_at_or_above else score <= self.threshold


class ScoreThresholds(stages.Filter):
    """The score stage's decision: reject pending records whose scores cross the pipeline's thresholds.

    Checked in the order nsfw, watermark, low_aesthetic: the first crossed names the record's fate.
    """

    name = STAGE
    reasons = {"nsfw": "p(nsfw) at or above nsfw.max_pnsfw",
               "watermark": "p(watermark) at or above watermark.max_pwatermark",
               "low_aesthetic": "aesthetic score at or below aesthetic.min_score"}
    Config = ScoringConfig

    def __init__(self, config: ScoringConfig | dict, strict: bool = False):
        super().__init__(config, strict)
        self.limits = _limits(self.config)

    def decide(self, row: dict) -> tuple[str, str] | None:
        for limit in self.limits:
            score = row[limit.column]
            if score is None or math.isnan(score):
                raise ValueError(f"pending but its {limit.column} score is {score} (was it scored?)")
            if limit.crossed(score):
                keeps = "<" if limit.rejects_at_or_above else ">"
                return limit.reason, f"{limit.column} {score:.4f}, kept only {keeps} {limit.threshold} ({limit.model})"
        return None

    def describe(self) -> str:
        return " ".join(self.describe_lines())

    def describe_lines(self) -> list[str]:
        """One sentence per model: the embedder, then each head with its threshold."""
        config, models = self.config, self.config.describe()
        heads = [("Aesthetic", config.aesthetic, aesthetic.SCORE, "min_score", "rejected at score <= {}"),
                 ("Watermark", config.watermark, watermark.SCORE, "max_pwatermark", "rejected at p(watermark) >= {}"),
                 ("NSFW", config.nsfw, nsfw.SCORE, "max_pnsfw", "rejected at p(nsfw) >= {}")]
        lines = [f"CLIP embeddings: `{models[embed.EMBEDDING]}`."]
        for label, head, column, field, rule in heads:
            if head is None:
                lines.append(f"{label}: not scored.")
                continue
            threshold = getattr(head, field)
            verdict = rule.format(threshold) if threshold is not None else "scored, not filtered"
            lines.append(f"{label}: {verdict} (model: `{models[column]}`).")
        return lines


stages.declare(STAGE, rejected=ScoreThresholds.reasons)


def _limits(config: ScoringConfig) -> list[Limit]:
    """Each threshold the pipeline sets, in the order they are checked."""
    limits = []
    if config.nsfw and config.nsfw.max_pnsfw is not None:
        limits.append(Limit(nsfw.SCORE, "nsfw", True, config.nsfw.max_pnsfw, config.nsfw.describe(config.clip)))
    if config.watermark and config.watermark.max_pwatermark is not None:
        limits.append(Limit(watermark.SCORE, "watermark", True, config.watermark.max_pwatermark,
                            config.watermark.describe()))
    if config.aesthetic and config.aesthetic.min_score is not None:
        limits.append(Limit(aesthetic.SCORE, "low_aesthetic", False, config.aesthetic.min_score,
                            config.aesthetic.describe()))
    return limits
