"""The accelerate training loop shared by both jobs.

One process per device (`accelerate launch` starts them); each process reads its own slots of
the shards (`train.data`), so the DataLoader is not passed through `accelerator.prepare`
(whose default for iterable datasets is to read on the main process and dispatch).

A run folder holds, per job (`OUT/autoencoder/`, `OUT/diffusion/`)::

    checkpoints/step-00000500/   accelerate state (model, optimizer, RNG, LR schedule, EMA,
                                 train state with the data position) + config.yaml + meta.json
    samples/step-00000500.png    validation grid (+ .json with its prompts or keys)
    logs/                        tensorboard (scalars, validation grids as images) or wandb/ (its run folder)
    final/                       the trained network (EMA weights when EMA is on), diffusers format,
                                 + config.yaml and training.json (when, processes, shard files);
                                 diffusion's is self-contained: unet/, vae/, conditioning/, scheduler/
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import time
from datetime import datetime, timezone
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import ProjectConfiguration, gather_object, set_seed
from PIL import Image
from tqdm.auto import tqdm

from curate.config import ConfigError
from curate.io import atomic_folder, partial_folder, publish_folder, start_folder
from train import cache, data, models
from train import config as config_io
from train.config import EmaConfig, LossCheck, OptimConfig, TrainConfig
from train.tasks import TASKS

log = logging.getLogger(__name__)
CHECKPOINT = re.compile(r"^step-(\d{8})$")
TRAINING_RECORD = "training.json"  # in every final/ export
NETWORK_KIND = {"autoencoder": "autoencoder", "diffusion": "unet"}  # the named sizes each job's network comes in


@dataclass(frozen=True)
class JobPaths:
    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def final(self) -> Path:
        return self.root / "final"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:08d}"

    def saved(self) -> list[Path]:
        """Complete checkpoints, oldest first (a partial one never has the final name)."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.iterdir() if CHECKPOINT.match(p.name))


@dataclass
class TrainState:
    """What the loop itself must carry over a resume; saved through accelerate's custom states."""

    step: int = 0  # optimizer steps done
    batches: int = 0  # micro-batches each process has taken
    slots: int = 0  # data slots (processes x workers) the positions belong to
    # slot -> (epoch, raw samples drawn, [epoch, drawn] of the samples waiting in its bucket buffers)
    positions: dict[int, tuple[int, int, list[list[int]]]] = field(default_factory=dict)
    bad_samples: dict[int, int] = field(default_factory=dict)  # slot -> bad samples skipped since the run began

    def take(self, batch: dict[str, Any]) -> None:
        self.batches += 1
        self.positions[batch["slot"]] = (batch["epoch"], batch["drawn"], batch["pending"])
        self.bad_samples[batch["slot"]] = self.bad_samples.get(batch["slot"], 0) + batch["bad_samples"]

    def owned(self, rank: int, slots_per_process: int) -> dict[str, dict[int, Any]]:
        """This process's part of the data state (its slots are rank * workers + role)."""
        return {name: {slot: value for slot, value in getattr(self, name).items()
                       if slot // slots_per_process == rank} for name in ("positions", "bad_samples")}

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "batches": self.batches, "slots": self.slots,
                "positions": dict(self.positions), "bad_samples": dict(self.bad_samples)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.batches, self.slots = state["step"], state["batches"], state["slots"]
        self.positions = {int(k): tuple(v) for k, v in state["positions"].items()}
        self.bad_samples = {int(k): v for k, v in state["bad_samples"].items()}


def warmup_then_constant(optimizer: torch.optim.Optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup_steps + 1)))


def make_optimizer(parameters: Any, optim: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay,
                             eps=optim.eps)


def make_ema(network: torch.nn.Module, ema: EmaConfig):
    from diffusers.training_utils import EMAModel

    return EMAModel(network.parameters(), decay=ema.decay, use_ema_warmup=ema.warmup, power=ema.power,
                    update_after_step=ema.update_after_step, model_cls=type(network), model_config=network.config)


def micro_batch_seed(seed: int, rank: int, batch: int) -> int:
    # Stateless: the noise of micro-batch n is a function of (seed, rank, n), so a resumed run
    # draws the same noise without carrying generator state across processes.
    return int.from_bytes(hashlib.sha256(f"{seed}/{rank}/{batch}".encode()).digest()[:8], "little") >> 1


def make_accelerator(config: TrainConfig, paths: JobPaths) -> Accelerator:
    log_with = config.accelerate.log_with
    if log_with != "none":
        from accelerate.utils import is_tensorboard_available, is_wandb_available

        if not {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}[log_with]():
            raise ConfigError(f"accelerate.log_with: {log_with} is not installed: pip install {log_with} "
                              f"(or set accelerate.log_with: none)")
    # On a CPU accelerate silently trains fp16 runs in fp32, with no autocast and no loss scale.
    if config.accelerate.mixed_precision == "fp16" and PartialState().device.type == "cpu":
        raise ConfigError("accelerate.mixed_precision: fp16 needs a GPU (on a CPU accelerate would train in fp32 "
                          "without a loss scale); use bf16, which CPU autocast supports, or no")
    return Accelerator(mixed_precision=config.accelerate.mixed_precision,
                       gradient_accumulation_steps=config.accelerate.gradient_accumulation_steps,
                       log_with=None if log_with == "none" else log_with,
                       project_config=ProjectConfiguration(project_dir=str(paths.root), logging_dir=str(paths.logs)))


class TrainingDiverged(ValueError):
    """A run that can no longer learn; the message names the step and the settings to change."""


@dataclass
class LossWatch:
    """Counts optimizer steps in a row whose loss is not finite or whose fp16 loss scale has collapsed."""

    check: LossCheck
    job: str
    fp16: bool
    bad_steps: int = 0

    def observe(self, step: int, finite: bool, scale: float | None) -> None:
        collapsed = scale is not None and scale < self.check.min_loss_scale
        self.bad_steps = self.bad_steps + 1 if collapsed or not finite else 0
        if self.bad_steps < self.check.patience:
            return
        what = (f"the fp16 loss scale is {scale:g}, below accelerate.loss_check.min_loss_scale "
                f"{self.check.min_loss_scale:g} (the gradients overflow on every step)" if collapsed
                else "the loss is not finite")
        change = (f"accelerate.mixed_precision: bf16 or a lower {self.job}.optim.lr" if self.fp16
                  else f"a lower {self.job}.optim.lr or {self.job}.optim.max_grad_norm")
        raise TrainingDiverged(f"{self.job} step {step}: {what} for {self.bad_steps} optimizer steps in a row "
                               f"(since step {step - self.bad_steps + 1}); start again with {change}")


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    """Config as flat scalars, what tensorboard's hparams accept."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(f"{prefix}{key}/", item).items()}
    return {prefix.rstrip("/"): value if isinstance(value, (int, float, str, bool)) else str(value)}


@dataclass
class Summary:
    job: str
    step: int
    samples_per_second: float  # over this invocation's steps, all processes
    data_wait_share: float  # of this invocation's step time, spent waiting for the next batch
    last_logs: dict[str, float]
    final: Path | None  # the export, when the run reached its last step


class Run:
    """One invocation of one job: set up, resume, step, checkpoint, validate, export."""

    def __init__(self, job: str, config: TrainConfig, out: Path, resume: bool,
                 on_batch: Callable[[dict[str, Any]], None] | None = None):
        if config.data.shards is None and config.data.cache is None:
            raise ConfigError("data.shards: no shards given; set it in the config or pass --shards")
        self.job, self.config, self.on_batch = job, config, on_batch
        self.settings = getattr(config, job)
        self.paths = JobPaths(Path(out) / job)
        self._check_resume(resume)
        self.accelerator = make_accelerator(config, self.paths)
        set_seed(config.seed)  # the same initial weights on every process
        # The curated shards, also when a latent cache stands in for them: training.json names them for the audit.
        self.shards = (data.expand_shards(config.data.shards) if config.data.shards
                       else cache.sources(Path(config.data.cache)))
        self.task = TASKS[job](config, self.shards, Path(out), self.accelerator.device)
        self.task.model.train()  # from_pretrained (fine-tuning) hands models over in eval mode
        compute = self.settings.compute
        models.set_compute(self.task.network, compute, NETWORK_KIND[job], self.settings.model)
        if compute.compile:
            self.task.model.compile()  # in place: state dict keys, checkpoints and EMA stay as they are
        trainable = [p for p in self.task.model.parameters() if p.requires_grad]
        optimizer = make_optimizer(trainable, self.settings.optim)
        self.schedule = warmup_then_constant(optimizer, self.settings.optim.warmup_steps)
        self.model, self.optimizer = self.accelerator.prepare(self.task.model, optimizer)
        self.ema = make_ema(self.task.network, self.settings.ema) if self.settings.ema else None
        if self.ema:
            self.ema.to(self.accelerator.device)
        self.state = TrainState()
        self.loss_watch = LossWatch(config.accelerate.loss_check, job, config.accelerate.mixed_precision == "fp16")
        self.phase: int | None = None
        self.data_config = config.data
        # Every bucket of the run (all phases), in one order on every process: the per-bucket log counts
        bucket_sets = [config.data.buckets] + [phase.buckets for phase in self.settings.phases]
        self.bucket_sizes = sorted({size for buckets in bucket_sets if buckets for size in data.bucket_sizes(buckets)})
        self.accelerator.register_for_checkpointing(self.schedule, self.state, *([self.ema] if self.ema else []))
        self.resumed_from = self._load_latest() if resume else None

    def _check_resume(self, resume: bool) -> None:
        if self.paths.saved() and not resume:
            raise ConfigError(f"{self.paths.checkpoints}: holds checkpoints of an earlier run; pass --resume to "
                              f"continue it or choose another --out")

    def _load_latest(self) -> Path | None:
        saved = self.paths.saved()
        if not saved:
            return None
        latest = saved[-1]
        before = config_io.parse((latest / "config.yaml").read_text(), str(latest / "config.yaml"))
        changed = config_io.blocking_differences(before, self.config)
        if changed:
            raise ConfigError(f"{latest}: saved with a different config ({', '.join(changed)}); resume with the "
                              f"same config or start a new --out")
        self.accelerator.load_state(str(latest))
        if self.ema:
            self.ema.to(self.accelerator.device)  # loaded onto the CPU
        log.info("resumed %s from %s at step %d", self.job, latest, self.state.step)
        return latest

    def _enter_phase(self, phase: int | None) -> Iterator[dict[str, Any]]:
        """Batches at the data settings of `phase` (of the schedule; None without one), from the data position
        of the last batch taken: a phase begun in a straight run reads on exactly as a run resumed there."""
        self.phase = phase
        settings = self.settings.phases[phase] if phase is not None else None
        self.data_config = config_io.phase_data(self.config.data, settings)
        if settings is not None:
            lr = settings.lr or self.settings.optim.lr
            self.schedule.base_lrs = [lr] * len(self.optimizer.param_groups)
            for group, rule in zip(self.optimizer.param_groups, self.schedule.lr_lambdas):
                group["lr"] = lr * rule(self.schedule.last_epoch)
            self.task.use_data(self.data_config)
            log.info("phase %d of %d from step %d: %s, lr %g", phase + 1, len(self.settings.phases), self.state.step,
                     f"buckets {self.data_config.buckets}" if self.data_config.buckets
                     else f"{self.data_config.resolution} px", lr)
        return iter(data.loader(self._stream(), self.data_config.workers))

    def _phase_begun(self) -> bool:
        """Whether the step just done was the first of its phase (whose first validation grid is kept)."""
        if self.phase is None:
            return False
        return self.state.step - 1 == sum(phase.steps for phase in self.settings.phases[:self.phase])

    def _stream(self) -> data.ShardStream:
        workers = self.data_config.workers
        slots = self.accelerator.num_processes * max(1, workers)
        if self.state.slots not in (0, slots):
            raise ConfigError(f"{self.resumed_from}: its data position is for {self.state.slots} data slots "
                              f"(processes x data.workers) but this run has {slots}; resume with the same layout")
        self.state.slots = slots
        if self.data_config.buckets:
            log.info("aspect buckets (width x height): %s",
                     ", ".join(f"{w}x{h}" for w, h in data.bucket_sizes(self.data_config.buckets)))
        start = {slot: data.Position(*position) for slot, position in self.state.positions.items()}
        return data.ShardStream(self.task.stream_shards, self.data_config, self.config.seed,
                                self.accelerator.process_index, self.accelerator.num_processes, start=start,
                                first_batch=self.state.batches, decoder=self.task.decoder)

    def _micro_step(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], float | None]:
        accelerator = self.accelerator
        generator = torch.Generator(accelerator.device).manual_seed(
            micro_batch_seed(self.config.seed, accelerator.process_index, self.state.batches))
        grad_norm = None
        with accelerator.accumulate(self.model):
            with accelerator.autocast():
                losses = self.task.losses(self.model, batch, generator, self.state.step)
            accelerator.backward(losses["loss"])
            if accelerator.sync_gradients and self.settings.optim.max_grad_norm:
                grad_norm = float(accelerator.clip_grad_norm_(self.model.parameters(),
                                                              self.settings.optim.max_grad_norm))
            self.optimizer.step()
            if accelerator.sync_gradients:
                self.schedule.step()
            self.optimizer.zero_grad(set_to_none=True)
        return {k: v.detach() for k, v in losses.items()}, grad_norm

    def _loss_scale(self) -> float | None:
        """fp16's current loss scale (accelerate's GradScaler); None in other precisions."""
        scaler = self.accelerator.scaler
        return float(scaler.get_scale()) if scaler is not None else None

    def _check_loss(self, loss: torch.Tensor) -> None:
        # Over all processes, so that every process stops at the same step.
        finite = bool(torch.isfinite(self.accelerator.reduce(loss, "sum")))
        self.loss_watch.observe(self.state.step, finite, self._loss_scale())

    def save_checkpoint(self) -> Path:
        accelerator = self.accelerator
        # Every process's data position goes into the one train state the main process saves.
        per_process = max(1, self.config.data.workers)
        for owned in gather_object([self.state.owned(accelerator.process_index, per_process)]):
            self.state.positions.update(owned["positions"])
            self.state.bad_samples.update(owned["bad_samples"])
        final = self.paths.checkpoint(self.state.step)
        if accelerator.is_main_process:
            start_folder(final)
        accelerator.wait_for_everyone()
        # Every process saves its part into the one partial folder; a checkpoint appears complete or not at all.
        partial = partial_folder(final)
        accelerator.save_state(str(partial))
        if accelerator.is_main_process:
            (partial / "config.yaml").write_text(config_io.dump(self.config), encoding="utf-8")
            meta = {"job": self.job, "step": self.state.step, "batches_per_process": self.state.batches,
                    "data_positions": {str(k): v for k, v in sorted(self.state.positions.items())},
                    "processes": accelerator.num_processes, "time": time.time()}
            (partial / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
            publish_folder(final)
            for old in self.paths.saved()[:-self.settings.loop.keep_checkpoints]:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()
        return final

    def _with_ema_weights(self, action: Callable[[], Any]) -> Any:
        """Run `action` with the EMA weights in the network, then put the trained weights back."""
        if self.ema is None:
            return action()
        parameters = list(self.task.network.parameters())
        self.ema.store(parameters)
        self.ema.copy_to(parameters)
        try:
            return action()
        finally:
            self.ema.restore(parameters)

    def validate(self) -> None:
        if self.accelerator.is_main_process:
            path = self.paths.samples / f"step-{self.state.step:08d}.png"
            self.task.network.eval()
            with self.accelerator.autocast():
                self._with_ema_weights(lambda: self.task.validate(self.state.step, path))
            self.task.network.train()
            self._log_grid(path)
            log.info("validation samples: %s", path)
        self.accelerator.wait_for_everyone()

    def _log_grid(self, path: Path) -> None:
        """The validation grid as an image in the trackers (tensorboard's IMAGES tab, a wandb media panel)."""
        with Image.open(path) as grid:
            images = np.asarray(grid.convert("RGB"))[None]
        for tracker in self.accelerator.trackers:
            layout = {"dataformats": "NHWC"} if tracker.name == "tensorboard" else {}
            tracker.log_images({"validation/samples": images}, step=self.state.step, **layout)

    def export(self) -> Path:
        if self.accelerator.is_main_process:
            self.task.network.eval()
            with atomic_folder(self.paths.final) as partial:
                self._with_ema_weights(lambda: self.task.export(partial))
                (partial / "config.yaml").write_text(config_io.dump(self.config), encoding="utf-8")
                (partial / TRAINING_RECORD).write_text(json.dumps(self._training_record(), indent=2),
                                                       encoding="utf-8")
        self.accelerator.wait_for_everyone()
        return self.paths.final

    def _samples_seen(self) -> int:
        per_step = self.accelerator.num_processes * self.config.accelerate.gradient_accumulation_steps
        if not self.settings.phases:
            return self.state.step * per_step * self.config.data.batch_size
        seen, begun = 0, 0
        for phase in self.settings.phases:
            steps = min(phase.steps, max(0, self.state.step - begun))
            seen += steps * per_step * config_io.phase_data(self.config.data, phase).batch_size
            begun += phase.steps
        return seen

    def _training_record(self) -> dict[str, Any]:
        """What the config alone does not say: when, on how many processes, on which shard files."""
        return {"job": self.job, "step": self.state.step, "processes": self.accelerator.num_processes,
                "samples_seen": self._samples_seen(),
                "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "ema": self.ema is not None, "shards": self.shards} | self.task.provenance()

    def _log(self, window: dict[str, Any]) -> dict[str, float]:
        accelerator = self.accelerator
        steps = window.pop("steps")
        means = {f"train/{k}": float(accelerator.reduce(v / steps, "mean")) for k, v in window.pop("sums").items()}
        owned = self.state.owned(accelerator.process_index, max(1, self.config.data.workers))["bad_samples"]
        bad = int(accelerator.reduce(torch.tensor(sum(owned.values()), device=accelerator.device), "sum"))
        logs = means | self.task.window_logs(lambda t: accelerator.reduce(t, "sum")) | {
            "lr": self.schedule.get_last_lr()[0],
            "data/samples_per_second": window["samples"] * accelerator.num_processes / window["seconds"],
            "data/wait_share": window["wait"] / window["seconds"],
            "data/bad_samples": bad,
        }
        logs |= self._bucket_logs(window["buckets"])
        if window["grad_norms"]:
            logs["train/grad_norm"] = sum(window["grad_norms"]) / len(window["grad_norms"])
        if self.ema is not None:
            logs["ema/decay"] = self.ema.cur_decay_value or 0.0
        if (scale := self._loss_scale()) is not None:
            logs["train/loss_scale"] = scale
        accelerator.log(logs, step=self.state.step)
        return logs

    def _bucket_logs(self, samples: dict[tuple[int, int], int]) -> dict[str, float]:
        """Samples per aspect bucket in the window, over all processes (none without buckets)."""
        sizes = self.bucket_sizes
        if not sizes:
            return {}
        counts = self.accelerator.reduce(torch.tensor([samples.get(size, 0) for size in sizes],
                                                      device=self.accelerator.device), "sum")
        return {f"data/bucket/{w}x{h}": float(n) for (w, h), n in zip(sizes, counts.tolist())}

    def train(self, stop_at: int | None = None) -> Summary:
        """Steps until `loop.steps` (or, as if killed there, until `stop_at`: no checkpoint, no export)."""
        accelerator, loop = self.accelerator, self.settings.loop
        # tensorboard writes logs/<job>/; wandb a run named for the job, in the config's project, in logs/wandb/
        project, init_kwargs = self.job, {}
        if self.config.accelerate.log_with == "wandb":
            self.paths.logs.mkdir(parents=True, exist_ok=True)
            project = self.config.name
            init_kwargs = {"wandb": {"dir": str(self.paths.logs), "name": self.job, "group": self.config.name}}
        accelerator.init_trackers(project, config=_flat("", self.config.model_dump(mode="json")),
                                  init_kwargs=init_kwargs)
        batches = self._enter_phase(config_io.phase_at(self.settings.phases, self.state.step))
        progress = tqdm(total=loop.steps, initial=self.state.step, desc=self.job,
                        disable=not accelerator.is_local_main_process)
        accum = self.config.accelerate.gradient_accumulation_steps
        total = {"seconds": 0.0, "wait": 0.0, "samples": 0}
        window = self._new_window()
        logs: dict[str, float] = {}
        last = loop.steps if stop_at is None else min(stop_at, loop.steps)
        while self.state.step < last:
            phase = config_io.phase_at(self.settings.phases, self.state.step)
            if phase != self.phase:
                batches = self._enter_phase(phase)
            started = time.perf_counter()
            step_loss = torch.zeros((), device=accelerator.device)
            for _ in range(accum):
                waited = time.perf_counter()
                batch = next(batches)
                window["wait"] += time.perf_counter() - waited
                self.state.take(batch)
                if self.on_batch:
                    self.on_batch(batch)
                losses, grad_norm = self._micro_step(batch)
                step_loss += losses["loss"].float()
                for name, value in losses.items():
                    window["sums"][name] = window["sums"].get(name, 0.0) + value / accum
                if grad_norm is not None and math.isfinite(grad_norm):
                    window["grad_norms"].append(grad_norm)
                window["samples"] += len(batch["keys"])
                bucket = tuple(batch["bucket"])  # the DataLoader hands tuples over as lists
                window["buckets"][bucket] = window["buckets"].get(bucket, 0) + len(batch["keys"])
            if self.ema is not None:
                self.ema.step(self.task.network.parameters())
            self.state.step += 1
            self._check_loss(step_loss)
            window["steps"] += 1
            window["seconds"] += time.perf_counter() - started
            progress.update(1)
            if self.state.step % loop.log_every == 0 or self.state.step == last:
                for key in total:
                    total[key] += window[key]
                logs = self._log(window)
                progress.set_postfix(loss=f"{logs['train/loss']:.4f}")
                window = self._new_window()
            if self.state.step % loop.checkpoint_every == 0 or self.state.step == loop.steps:
                self.save_checkpoint()
            if self.state.step % loop.validate_every == 0 or self.state.step == loop.steps or self._phase_begun():
                self.validate()
        progress.close()
        final = self.export() if self.state.step == loop.steps else None
        accelerator.end_training()
        seconds = total["seconds"] or float("nan")
        return Summary(self.job, self.state.step, total["samples"] * accelerator.num_processes / seconds,
                       total["wait"] / seconds, logs, final)

    @staticmethod
    def _new_window() -> dict[str, Any]:
        return {"steps": 0, "seconds": 0.0, "wait": 0.0, "samples": 0, "sums": {}, "grad_norms": [], "buckets": {}}


def train(job: str, config: TrainConfig, out: Path, resume: bool = False, stop_at: int | None = None,
          on_batch: Callable[[dict[str, Any]], None] | None = None) -> Summary:
    if job not in TASKS:
        raise ValueError(f"unknown job {job!r}; known: {', '.join(TASKS)}")
    return Run(job, config, out, resume, on_batch).train(stop_at)
