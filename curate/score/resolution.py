"""Resolution filter on the original image size (before any resize for the shard)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from curate import stages


class ResolutionFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_side: int = Field(default=256, ge=1, description="Reject originals whose shorter side is below this.")
    max_aspect_ratio: float = Field(default=3.0, ge=1.0, description=(
        "Reject originals whose long side is more than this many times the short side."))


@stages.register
class Resolution(stages.Filter):
    """Reject pending records whose original short side or aspect ratio is out of bounds."""

    name = "resolution"
    reasons = {"min_side": "the original's shorter side is below min_side",
               "max_aspect_ratio": "the original is more elongated than max_aspect_ratio"}
    Config = ResolutionFilter

    def decide(self, row: dict[str, Any]) -> tuple[str, str] | None:
        width, height = row["original_width"], row["original_height"]
        short, long = sorted((width, height))
        if short < self.config.min_side:
            return "min_side", f"original {width}x{height}: short side {short} < min_side {self.config.min_side}"
        if long / short > self.config.max_aspect_ratio:
            return ("max_aspect_ratio",
                    f"original {width}x{height}: aspect ratio {long / short:.2f} > {self.config.max_aspect_ratio}")
        return None

    def describe(self) -> str:
        return (f"Resolution: shorter side at least {self.config.min_side} px, aspect ratio at most "
                f"{self.config.max_aspect_ratio}.")
