"""Mixed precision through accelerate, and the loss check that stops a run which can no longer learn."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState

from curate.config import ConfigError
from train.config import LossCheck
from train.loop import LossWatch, Run, TrainingDiverged

from trained import tiny_config


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one mixed precision per process; these tests change it, so each starts afresh."""
    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def diffusion_config(shards: Path, autoencoder: Path, precision: str = "no", patience: int = 10):
    return tiny_config(shards, accelerate={"mixed_precision": precision, "log_with": "none",
                                           "loss_check": {"patience": patience}},
                       diffusion=tiny_config(shards).diffusion.model_dump() | {
                           "autoencoder": str(autoencoder),
                           "loop": {"steps": 4, "checkpoint_every": 2, "validate_every": 100, "log_every": 1}})


def test_bf16_trains_the_unet_under_autocast_on_cpu(shards: Path, random_autoencoder, tmp_path: Path):
    run = Run("diffusion", diffusion_config(shards, random_autoencoder(0), "bf16"), tmp_path, resume=False)
    dtypes: set[torch.dtype] = set()
    run.task.network.conv_in.register_forward_hook(lambda module, args, output: dtypes.add(output.dtype))
    before = {k: v.clone() for k, v in run.task.network.state_dict().items()}
    summary = run.train()
    assert torch.bfloat16 in dtypes  # the UNet's convolutions ran in bf16
    assert math.isfinite(summary.last_logs["train/loss"]) and "train/loss_scale" not in summary.last_logs
    after = run.task.network.state_dict()
    assert all(after[k].dtype == torch.float32 for k in after)  # the weights stay fp32 (autocast, not .half())
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_fp16_on_a_cpu_is_refused_naming_what_to_use(shards: Path, random_autoencoder, tmp_path: Path):
    if torch.cuda.is_available():
        pytest.skip("fp16 runs on this machine's GPU")
    with pytest.raises(ConfigError, match=r"accelerate.mixed_precision: fp16 needs a GPU .* use bf16"):
        Run("diffusion", diffusion_config(shards, random_autoencoder(0), "fp16"), tmp_path, resume=False)
    assert not (tmp_path / "diffusion" / "checkpoints").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast and GradScaler need a GPU")
def test_fp16_trains_on_a_gpu_and_logs_the_loss_scale(shards: Path, random_autoencoder, tmp_path: Path):
    summary = Run("diffusion", diffusion_config(shards, random_autoencoder(0), "fp16"), tmp_path,
                  resume=False).train()
    assert math.isfinite(summary.last_logs["train/loss"]) and summary.last_logs["train/loss_scale"] >= 1


def test_a_loss_that_stays_non_finite_stops_the_run_naming_the_step(shards: Path, random_autoencoder,
                                                                  tmp_path: Path):
    taken: list[str] = []

    def poison_from_the_second_batch(batch):
        taken.append(batch["keys"][0])
        if len(taken) >= 2:
            batch["pixels"].fill_(float("nan"))

    config = diffusion_config(shards, random_autoencoder(0), patience=2)
    run = Run("diffusion", config, tmp_path, resume=False, on_batch=poison_from_the_second_batch)
    with pytest.raises(TrainingDiverged, match=r"diffusion step 3: the loss is not finite for 2 optimizer steps "
                                               r"in a row \(since step 2\); start again with a lower "
                                               r"diffusion.optim.lr"):
        run.train()
    # Its last checkpoint is step 2's: the run stopped before saving step 4's.
    assert [p.name for p in run.paths.saved()] == ["step-00000002"]


def test_a_collapsed_fp16_loss_scale_stops_with_bf16_as_the_advice():
    watch = LossWatch(LossCheck(patience=3, min_loss_scale=1.0), "diffusion", fp16=True)
    scales = [65536 / 2**k for k in range(20)]  # GradScaler halving it on an overflow at every step
    # Below 1 from step 18 (65536 / 2**17): the third such step in a row stops the run.
    with pytest.raises(TrainingDiverged, match=r"diffusion step 20: the fp16 loss scale is 0.125, below .*"
                                               r"min_loss_scale 1 .* for 3 optimizer steps in a row \(since step "
                                               r"18\); start again with accelerate.mixed_precision: bf16"):
        for step, scale in enumerate(scales, start=1):
            watch.observe(step, True, scale)


def test_a_good_step_resets_the_count():
    watch = LossWatch(LossCheck(patience=2), "autoencoder", fp16=False)
    for step, finite in enumerate((False, True, False, True), start=1):
        watch.observe(step, finite, None)  # never two bad steps in a row
    watch.observe(5, False, None)
    with pytest.raises(TrainingDiverged, match=r"autoencoder step 6: .* \(since step 5\); start again with a lower "
                                               r"autoencoder.optim.lr or autoencoder.optim.max_grad_norm"):
        watch.observe(6, False, None)
