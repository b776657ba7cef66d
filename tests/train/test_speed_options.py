"""The compute options (`<job>.compute`): each trains the same model as the plain run, and resumes exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from safetensors.torch import load_file

from train import config as config_io
from train import models
from train.config import ComputeConfig
from train.loop import Run

from trained import tiny_config

STEPS = 3


def compute_config(shards: Path, autoencoder: Path, **compute: Any):
    return tiny_config(shards, diffusion=tiny_config(shards).diffusion.model_dump() | {
        "autoencoder": str(autoencoder), "compute": compute,
        "loop": {"steps": STEPS, "checkpoint_every": 2, "keep_checkpoints": 5, "validate_every": 100,
                 "log_every": 1}})


def trained(config, out: Path) -> tuple[float, dict[str, torch.Tensor]]:
    """The last step's loss (it depends on every update before it) and the final UNet weights."""
    summary = Run("diffusion", config, out, resume=False).train()
    weights = load_file(out / "diffusion" / "final" / "unet" / "diffusion_pytorch_model.safetensors")
    return summary.last_logs["train/loss"], weights


@pytest.fixture(scope="module")
def plain(shards: Path, random_autoencoder, tmp_path_factory) -> tuple[float, dict[str, torch.Tensor]]:
    return trained(compute_config(shards, random_autoencoder(0)), tmp_path_factory.mktemp("plain"))


@pytest.mark.parametrize(("option", "loss_tolerance"), [
    ({"gradient_checkpointing": True}, 1e-6),  # the same operations, recomputed
    ({"channels_last": True}, 1e-4),  # other convolution kernels
    ({"attention": "default"}, 1e-4),  # bmm-softmax-bmm instead of SDPA
])
def test_a_compute_option_trains_like_the_plain_run(option: dict[str, Any], loss_tolerance: float, plain,
                                                    shards: Path, random_autoencoder, tmp_path: Path):
    loss, weights = trained(compute_config(shards, random_autoencoder(0), **option), tmp_path)
    plain_loss, plain_weights = plain
    assert loss == pytest.approx(plain_loss, rel=loss_tolerance)
    assert weights.keys() == plain_weights.keys()  # the export loads anywhere the plain one does
    # Adam's first steps move each weight by about lr whatever the gradient's size, so kernels that round
    # differently can flip a near-zero gradient's sign; the weights agree to a fraction of lr (1e-3).
    worst = max(float((weights[k] - plain_weights[k]).abs().max()) for k in weights)
    assert worst < 2e-3


@pytest.mark.slow
def test_a_compiled_unet_trains_like_the_plain_run(plain, shards: Path, random_autoencoder, tmp_path: Path):
    loss, weights = trained(compute_config(shards, random_autoencoder(0), compile=True), tmp_path)
    assert loss == pytest.approx(plain[0], rel=1e-3)
    assert weights.keys() == plain[1].keys()  # compiled in place: no _orig_mod. prefix in the export


def test_a_run_with_every_option_resumes_exactly(shards: Path, random_autoencoder, tmp_path: Path,
                                                 straight_and_resumed):
    config = compute_config(shards, random_autoencoder(0), gradient_checkpointing=True, channels_last=True,
                            attention="default")
    summary, straight, resumed = straight_and_resumed(config, tmp_path, stop_at=STEPS - 1)
    assert summary.step == STEPS and resumed == straight[2:]


def test_gradient_checkpointing_follows_the_model_size_unless_set():
    def checkpointing(size: str, **compute: Any) -> bool:
        torch.manual_seed(0)
        network = models.build("unet", "tiny")
        models.set_compute(network, ComputeConfig(**compute), "unet", size)
        return network.is_gradient_checkpointing

    assert checkpointing("sd1-base") and not checkpointing("tiny")  # sd1-base's file turns it on
    assert not checkpointing("sd1-base", gradient_checkpointing=False)
    assert checkpointing("tiny", gradient_checkpointing=True)


@pytest.mark.parametrize("kind", ["unet", "autoencoder"])
@pytest.mark.parametrize(("attention", "processor"), [("sdpa", AttnProcessor2_0), ("default", AttnProcessor)])
def test_attention_sets_every_attention_layers_processor(kind: str, attention: str, processor: type):
    network = models.build(kind, "tiny")
    models.set_compute(network, ComputeConfig(attention=attention), kind, "tiny")
    assert network.attn_processors and all(type(p) is processor for p in network.attn_processors.values())


def test_a_run_may_resume_with_other_compute_options(shards: Path):
    plain = tiny_config(shards)
    faster = tiny_config(shards, diffusion=plain.diffusion.model_dump() | {
        "compute": {"compile": True, "channels_last": True, "gradient_checkpointing": True}})
    assert config_io.blocking_differences(plain, faster) == []
    assert config_io.blocking_differences(plain, tiny_config(shards, accelerate={"mixed_precision": "bf16"})) == [
        "accelerate.mixed_precision"]  # precision changes what is learnt
