"""Threshold decisions on controlled scores, the scoring config, and checks before any image."""

import re
import pyarrow as pa
import pytest
import torch
from pydantic import ValidationError

from curate import records
from curate.score import aesthetic, nsfw, watermark
from curate.score.filter import EmbeddingHeads, ScoreThresholds, ScoringConfig
from curate.score.weights import WeightsError

TINY = {"model": "cleanroom-tiny-clip"}


def config(**heads) -> ScoringConfig:
    return ScoringConfig.model_validate({"clip": TINY, **heads})


THRESHOLDS = config(aesthetic={"weights": "a.pth", "min_score": 5.0},
                    watermark={"weights": "w.pt", "max_pwatermark": 0.5},
                    nsfw={"kind": "head", "weights": "n.pt", "max_pnsfw": 0.3})


def scored(name, aesthetic_score, pwatermark, pnsfw):
    row = records.candidate("met", name)
    return {**row, aesthetic.SCORE: aesthetic_score, watermark.SCORE: pwatermark, nsfw.SCORE: pnsfw}


def fates(rows, scoring=THRESHOLDS):
    table = records.to_table(rows)
    for column in (aesthetic.SCORE, watermark.SCORE, nsfw.SCORE):
        table = records.put_column(table, column, pa.array([r[column] for r in rows], "float32"))
    return [(r["status"], r["reason"], r["detail"]) for r in ScoreThresholds(scoring)(table).to_pylist()]


def test_thresholds_keep_strictly_inside_and_name_score_threshold_and_model():
    decided = records.finish(records.candidate("met", "decided"), records.FAILED, "download_timeout")
    out = fates([scored("keep", 5.01, 0.49, 0.29), scored("aesthetic", 5.0, 0.1, 0.1),
                 scored("watermark", 9.0, 0.5, 0.1), scored("nsfw", 9.0, 0.1, 0.3),
                 scored("both", 1.0, 0.9, 0.9),
                 {**decided, aesthetic.SCORE: None, watermark.SCORE: None, nsfw.SCORE: None}])
    assert [(s, r) for s, r, _ in out] == [
        ("pending", ""), ("rejected", "low_aesthetic"), ("rejected", "watermark"), ("rejected", "nsfw"),
        ("rejected", "nsfw"), ("failed", "download_timeout")]
    assert out[1][2] == "aesthetic 5.0000, kept only > 5.0 (laion-aesthetic-improved_mlp:a.pth)"
    assert out[2][2] == "pwatermark 0.5000, kept only < 0.5 (laion-watermark-efficientnet_b3:w.pt)"
    assert "pnsfw 0.3000, kept only < 0.3 (nsfw-head:n.pt on open_clip:cleanroom-tiny-clip/random-init)" in out[3][2]


def test_without_thresholds_scores_are_recorded_and_nothing_is_rejected():
    scoring = config(aesthetic={"weights": "a.pth"}, watermark={"weights": "w.pt"},
                     nsfw={"kind": "zero_shot"})
    assert [s for s, _, _ in fates([scored("low", 0.0, 1.0, 1.0)], scoring)] == ["pending"]


def test_a_pending_record_without_its_score_fails_in_the_score_stage_naming_it():
    (status, reason, detail), = fates([scored("unscored", 6.0, 0.1, None)])
    assert (status, reason) == ("failed", "stage_error")
    assert re.fullmatch(r"record met-[0-9a-f]+: ValueError: pending but its pnsfw score is None \(was it scored\?\)",
                        detail)


def test_the_score_stage_says_what_it_keeps_with_each_model():
    lines = ScoreThresholds(THRESHOLDS).describe_lines()
    assert lines == ["CLIP embeddings: `open_clip:cleanroom-tiny-clip/random-init`.",
                     "Aesthetic: rejected at score <= 5.0 (model: `laion-aesthetic-improved_mlp:a.pth on "
                     "open_clip:cleanroom-tiny-clip/random-init`).",
                     "Watermark: rejected at p(watermark) >= 0.5 (model: `laion-watermark-efficientnet_b3:w.pt`).",
                     "NSFW: rejected at p(nsfw) >= 0.3 (model: `nsfw-head:n.pt on "
                     "open_clip:cleanroom-tiny-clip/random-init`)."]


def test_config_is_strict_and_says_which_model_gives_each_score():
    with pytest.raises(ValidationError, match="min_scor"):
        config(aesthetic={"weights": "a.pth", "min_scor": 5.0})
    with pytest.raises(ValidationError, match="kind"):
        config(nsfw={"weights": "n.pt"})
    assert THRESHOLDS.describe() == {
        "embedding": "open_clip:cleanroom-tiny-clip/random-init",
        "aesthetic": "laion-aesthetic-improved_mlp:a.pth on open_clip:cleanroom-tiny-clip/random-init",
        "pwatermark": "laion-watermark-efficientnet_b3:w.pt",
        "pnsfw": "nsfw-head:n.pt on open_clip:cleanroom-tiny-clip/random-init",
    }


def test_a_768_d_head_on_a_32_d_embedder_or_a_missing_file_fails_when_the_stage_is_built(tmp_path):
    head = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    aesthetic.save_random(head, "improved_mlp", 768)
    with pytest.raises(WeightsError, match=r"linearMSE.pth: .* takes 768-d .* gives 32-d .*\(\.\.\., 32\)"):
        EmbeddingHeads(config(aesthetic={"weights": str(head)}))
    with pytest.raises(FileNotFoundError, match="watermark_model_v1.pt: LAION-5B watermark detector"):
        EmbeddingHeads(config(watermark={"weights": str(tmp_path / "watermark_model_v1.pt")}))
    with pytest.raises(FileNotFoundError, match="tiny.pt: checkpoint for cleanroom-tiny-clip not found"):
        EmbeddingHeads(config(clip={**TINY, "checkpoint": str(tmp_path / "tiny.pt")}))
    small = tmp_path / "small.pth"
    aesthetic.save_random(small, "improved_mlp", 32)
    heads = EmbeddingHeads(config(aesthetic={"weights": str(small)}, nsfw={"kind": "zero_shot"}))
    assert [type(h).__name__ for h in heads.heads] == ["Aesthetic", "NsfwZeroShot"]
    assert not any(p.requires_grad for p in heads.heads[0].model.parameters())
    assert isinstance(heads.heads[1].prompts, torch.Tensor)
