"""Histograms of the run's score columns, with each threshold drawn, and the seconds each step of the run
took, as inline SVG (matplotlib, Agg).

The counts per bin are computed by DuckDB over the catalog's ``records`` table, so a plot costs
one pass over the run whatever its size; matplotlib only draws the bars. It is imported when a
plot is made, so that ``cleanroom --help`` and the curation stages never load it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Callable

import duckdb

from curate import records
from curate.config import RunConfig
from curate.report import tables
from curate.score.filter import ScoreThresholds

BINS = 30
# The score columns of the record schema a report plots, in the order it shows them.
SCORES = ("aesthetic", "pwatermark", "pnsfw", "caption_clip_similarity")
BLUE, GREY = "#3b7dd8", "#c9c9c9"


@dataclass(frozen=True)
class Threshold:
    value: float
    rejects: str  # the comparison that rejects a record: ">=", "<=" or "<"

    @property
    def label(self) -> str:
        return f"threshold: rejected {self.rejects} {self.value:g}"


@dataclass(frozen=True)
class Histogram:
    column: str
    edges: list[float]  # BINS + 1
    kept: list[int]
    not_kept: list[int]
    threshold: Threshold | None


def thresholds(config: RunConfig) -> dict[str, tuple[Threshold | None, str]]:
    """Score column -> (its threshold, if the pipeline sets one; the model that made it)."""
    found: dict[str, tuple[Threshold | None, str]] = {}
    scoring = config.pipeline.scoring
    if scoring:
        limits = {limit.column: limit for limit in ScoreThresholds(scoring).limits}
        for column, model in scoring.describe().items():
            limit = limits.get(column)
            rejects = ">=" if limit and limit.rejects_at_or_above else "<="
            found[column] = (Threshold(limit.threshold, rejects) if limit else None, model)
    similarity = config.pipeline.captions.similarity
    if similarity:
        # curate.captioners.similarity keeps a caption scoring at least the threshold.
        found["caption_clip_similarity"] = (Threshold(similarity.threshold, "<"), similarity.model.describe())
    return found


def histogram(con: duckdb.DuckDBPyConnection, column: str, threshold: Threshold | None) -> Histogram | None:
    """Counts per bin of ``column`` (one of SCORES), kept samples apart; None when no record has the score."""
    if column not in SCORES:
        raise ValueError(f"{column}: not a score column; one of {', '.join(SCORES)}")
    low, high, n = tables.rows(con, f"SELECT min({column}), max({column}), count({column}) FROM records "
                                    f"WHERE isfinite({column})")[0]
    if not n:
        return None
    if threshold is not None:  # the line is drawn inside the axes even where no score came near it
        low, high = min(low, threshold.value), max(high, threshold.value)
    width = (high - low) / BINS or 1.0
    kept, not_kept = [0] * BINS, [0] * BINS
    for bin_, is_kept, count in tables.rows(
            con, f"SELECT least(floor(({column} - ?) / ?)::INTEGER, ?), status = ?, count(*) FROM records "
                 f"WHERE isfinite({column}) GROUP BY ALL", [low, width, BINS - 1, records.KEPT]):
        (kept if is_kept else not_kept)[bin_] += count
    return Histogram(column, [low + i * width for i in range(BINS + 1)], kept, not_kept, threshold)


def svg(plot: Histogram) -> str:
    """The histogram as an ``<svg>`` element (no XML prolog), ready to sit inline in HTML."""

    def draw(axes) -> None:
        lefts, widths = plot.edges[:-1], plot.edges[1] - plot.edges[0]
        axes.bar(lefts, plot.kept, width=widths, align="edge", color=BLUE, label="kept")
        axes.bar(lefts, plot.not_kept, width=widths, align="edge", bottom=plot.kept, color=GREY, label="not kept")
        if plot.threshold is not None:
            axes.axvline(plot.threshold.value, color="#d62728", linestyle="--", label=plot.threshold.label)
        axes.set_xlabel(plot.column)
        axes.set_ylabel("records")

    return drawn(plot.column, draw, (5.2, 2.8))


def step_seconds_svg(steps: list[str], seconds: list[float], cpu_seconds: list[float | None]) -> str:
    """Wall and CPU seconds per step as horizontal bars, the first step on top, as an inline ``<svg>``."""

    def draw(axes) -> None:
        rows = range(len(steps))
        axes.barh([r - 0.2 for r in rows], seconds, height=0.4, color=BLUE, label="wall seconds")
        axes.barh([r + 0.2 for r in rows], [c or 0.0 for c in cpu_seconds], height=0.4, color=GREY,
                  label="CPU seconds")
        axes.set_yticks(list(rows), steps)
        axes.invert_yaxis()
        axes.set_xlabel("seconds")

    return drawn("step-seconds", draw, (5.2, 0.6 + 0.35 * len(steps)))


def drawn(salt: str, draw: Callable[[Any], None], size: tuple[float, float]) -> str:
    """What ``draw`` puts on one matplotlib axes, with a legend, as an ``<svg>`` element (no XML prolog)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    # A salt per plot keeps the ids matplotlib gives clip paths and glyphs apart between plots on one page.
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none", "font.size": 9}):
        figure = Figure(figsize=size, layout="constrained")
        axes = figure.subplots()
        draw(axes)
        axes.legend(fontsize=7, frameon=False)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]
