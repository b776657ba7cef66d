"""A few real steps of both jobs on shards built in the test: files, resume exactness, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from curate.config import ConfigError
from train.loop import JobPaths, Run, train

from trained import tiny_config


def keys_recorder() -> tuple[list[list[str]], callable]:
    seen: list[list[str]] = []
    return seen, lambda batch: seen.append(list(batch["keys"]))


def ema_state(checkpoint: Path) -> list[torch.Tensor]:
    return torch.load(checkpoint / "custom_checkpoint_2.pkl", weights_only=False)["shadow_params"]


@pytest.fixture(scope="module")
def autoencoder_run(shards: Path, tmp_path_factory) -> Path:
    """A run folder whose autoencoder is trained (4 steps) and exported, with tensorboard logs."""
    out = tmp_path_factory.mktemp("run")
    config = tiny_config(shards, accelerate={"mixed_precision": "no", "log_with": "tensorboard"})
    summary = train("autoencoder", config, out)
    assert summary.step == 4 and summary.final == out / "autoencoder" / "final"
    return out


def test_autoencoder_run_writes_checkpoints_samples_logs_and_export(autoencoder_run: Path):
    paths = JobPaths(autoencoder_run / "autoencoder")
    assert [p.name for p in paths.saved()] == ["step-00000002", "step-00000004"]
    latest = paths.saved()[-1]
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "config.yaml", "meta.json"} <= {
        p.name for p in latest.iterdir()}
    assert json.loads((latest / "meta.json").read_text())["step"] == 4
    assert (latest / "config.yaml").read_text().startswith("name: test")
    labels = json.loads((paths.samples / "step-00000004.json").read_text())["labels"]
    assert labels[:2] == ["test-00000", "test-00001"] and labels[2].startswith("reconstruction of")
    assert (paths.samples / "step-00000004.png").stat().st_size > 0
    assert list(paths.logs.rglob("events.out.tfevents.*"))
    exported = json.loads((paths.final / "config.json").read_text())
    assert exported["scaling_factor"] != pytest.approx(0.18215)  # measured on our latents
    assert (paths.final / "config.yaml").is_file() and not list(paths.root.rglob("*.partial"))


def test_diffusion_run_uses_the_trained_autoencoder_and_exports(autoencoder_run: Path, shards: Path, tmp_path: Path):
    config = tiny_config(shards, diffusion=tiny_config(shards).diffusion.model_dump() | {
        "autoencoder": str(autoencoder_run / "autoencoder" / "final"), "prediction": "v_prediction",
        "offset_noise": {"strength": 0.1, "probability": 0.5, "start_step": 2}})
    summary = train("diffusion", config, tmp_path)
    final = tmp_path / "diffusion" / "final"
    assert summary.step == 4 and summary.final == final
    expected = {"unet", "vae", "conditioning", "scheduler", "config.yaml", "training.json"}
    assert expected <= {p.name for p in final.iterdir()}
    assert json.loads((final / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "v_prediction"
    assert json.loads((tmp_path / "diffusion" / "samples" / "step-00000004.json").read_text())["labels"] == [
        "a red square", ""]
    assert any(k.startswith("loss_by_t/") for k in summary.last_logs)
    assert 0 <= summary.data_wait_share < 1 and summary.samples_per_second > 0


def test_diffusion_without_an_autoencoder_says_what_to_run(shards: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="run `cleanroom train autoencoder` first"):
        train("diffusion", tiny_config(shards), tmp_path)


def diffusion_config(shards: Path, autoencoder_run: Path, **loop):
    return tiny_config(shards, diffusion=tiny_config(shards).diffusion.model_dump() | {
        "autoencoder": str(autoencoder_run / "autoencoder" / "final"),
        "offset_noise": {"strength": 0.1, "probability": 0.5, "start_step": 0},
        "optim": {"lr": 1e-3, "warmup_steps": 3},
        "loop": {"steps": 6, "checkpoint_every": 3, "keep_checkpoints": 5, "validate_every": 100, "log_every": 2}})


def test_checkpoint_kill_resume_continues_exactly(autoencoder_run: Path, shards: Path, tmp_path: Path):
    config = diffusion_config(shards, autoencoder_run)
    straight_keys, record = keys_recorder()
    train("diffusion", config, tmp_path / "straight", on_batch=record)

    first_keys, record = keys_recorder()
    # Killed after step 5: the last checkpoint is step 3, so steps 4 and 5 are lost and redone.
    stopped = train("diffusion", config, tmp_path / "resumed", stop_at=5, on_batch=record)
    assert stopped.step == 5 and stopped.final is None
    resumed_keys, record = keys_recorder()
    run = Run("diffusion", config, tmp_path / "resumed", resume=True, on_batch=record)
    assert run.state.step == 3 and run.resumed_from.name == "step-00000003"
    assert run.train().step == 6

    assert first_keys == straight_keys[:5]
    assert resumed_keys == straight_keys[3:]  # the same data position: the next batch is batch 4
    for step in ("step-00000003", "step-00000006"):
        a = tmp_path / "straight" / "diffusion" / "checkpoints" / step
        b = tmp_path / "resumed" / "diffusion" / "checkpoints" / step
        assert all(torch.equal(x, y) for x, y in zip(ema_state(a), ema_state(b))), f"EMA differs at {step}"
        model_a, model_b = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
        assert all(torch.equal(model_a[k], model_b[k]) for k in model_a), f"weights differ at {step}"
        meta_a, meta_b = (json.loads((p / "meta.json").read_text()) for p in (a, b))
        assert meta_a["data_positions"] == meta_b["data_positions"]
    exported = [load_file(tmp_path / run / "diffusion" / "final" / "unet" / "diffusion_pytorch_model.safetensors")
                for run in ("straight", "resumed")]
    assert all(torch.equal(exported[0][k], exported[1][k]) for k in exported[0])


def test_autoencoder_resume_with_gradient_accumulation(shards: Path, tmp_path: Path):
    config = tiny_config(shards, accelerate={"mixed_precision": "no", "log_with": "none",
                                             "gradient_accumulation_steps": 2},
                         autoencoder=tiny_config(shards).autoencoder.model_dump() | {
                             "loop": {"steps": 4, "checkpoint_every": 2, "validate_every": 100, "log_every": 1}})
    straight_keys, record = keys_recorder()
    train("autoencoder", config, tmp_path / "straight", on_batch=record)
    train("autoencoder", config, tmp_path / "resumed", stop_at=3)
    resumed_keys, record = keys_recorder()
    assert train("autoencoder", config, tmp_path / "resumed", resume=True, on_batch=record).step == 4
    assert len(straight_keys) == 8 and resumed_keys == straight_keys[4:]  # 2 micro-batches per step
    a, b = (load_file(tmp_path / r / "autoencoder" / "final" / "diffusion_pytorch_model.safetensors")
            for r in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    longer = config.model_copy(update={"autoencoder": config.autoencoder.model_copy(update={
        "loop": config.autoencoder.loop.model_copy(update={"steps": 5})})})
    assert train("autoencoder", longer, tmp_path / "resumed", resume=True, on_batch=record).step == 5
    assert len(resumed_keys) == 6  # a longer run continues from the finished one


def test_refuses_to_overwrite_or_resume_with_another_config(autoencoder_run: Path, shards: Path):
    config = tiny_config(shards)  # tensorboard off: a change a resumed run may make
    with pytest.raises(ConfigError, match="pass --resume"):
        train("autoencoder", config, autoencoder_run)
    changed = tiny_config(shards, seed=7, data=config.data.model_dump() | {"resolution": 48})
    with pytest.raises(ConfigError, match=r"different config \(data.resolution, seed\)"):
        train("autoencoder", changed, autoencoder_run, resume=True)


def test_resuming_a_finished_run_only_exports_again(autoencoder_run: Path, shards: Path):
    config = tiny_config(shards, accelerate={"mixed_precision": "no", "log_with": "tensorboard"})
    seen, record = keys_recorder()
    summary = train("autoencoder", config, autoencoder_run, resume=True, on_batch=record)
    assert summary.step == 4 and seen == [] and summary.final.is_dir()


def test_autoencoder_with_perceptual_loss_from_local_weights(shards: Path, lpips_files, tmp_path: Path):
    config = tiny_config(shards, autoencoder=tiny_config(shards).autoencoder.model_dump() | {
        "perceptual": lpips_files.model_dump(), "ema": None,
        "loop": {"steps": 1, "checkpoint_every": 1, "validate_every": 1, "log_every": 1}})
    summary = train("autoencoder", config, tmp_path)
    assert summary.last_logs["train/perceptual"] > 0


@pytest.mark.slow
def test_resume_with_data_loader_workers(shards: Path, tmp_path: Path):
    config = tiny_config(shards, data=tiny_config(shards).data.model_dump() | {"workers": 2},
                         autoencoder=tiny_config(shards).autoencoder.model_dump() | {
                             "loop": {"steps": 5, "checkpoint_every": 3, "validate_every": 100, "log_every": 1}})
    straight_keys, record = keys_recorder()
    train("autoencoder", config, tmp_path / "straight", on_batch=record)
    train("autoencoder", config, tmp_path / "resumed", stop_at=4)
    resumed_keys, record = keys_recorder()
    train("autoencoder", config, tmp_path / "resumed", resume=True, on_batch=record)
    assert resumed_keys == straight_keys[3:]  # batch 4 comes from the second worker, as it did
    a, b = (load_file(tmp_path / r / "autoencoder" / "final" / "diffusion_pytorch_model.safetensors")
            for r in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
