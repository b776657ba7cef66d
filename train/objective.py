"""What a training step minimises, apart from any loop: noise, targets, weights, losses.

The network is any callable, so each piece is testable with a two-layer dummy. Randomness
comes only from the `generator` argument: the loop seeds one per micro-batch, which is
what makes a resumed run draw the same noise as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from train.config import DiffusionJob, NoiseSchedule, OffsetNoise

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (noisy, t, states) -> prediction


def noise_scheduler(schedule: NoiseSchedule, prediction: str) -> DDPMScheduler:
    # Every sampler (and the exported pipeline's scheduler) is built from this config, so it says
    # what sampling needs: clip_sample off, as latents are not bounded to [-1, 1] like pixels;
    # steps_offset 1, which StableDiffusionPipeline imposes on any scheduler it is given.
    # Neither changes training, which only adds noise.
    return DDPMScheduler(num_train_timesteps=schedule.num_train_timesteps, beta_schedule=schedule.beta_schedule,
                         beta_start=schedule.beta_start, beta_end=schedule.beta_end, prediction_type=prediction,
                         clip_sample=False, steps_offset=1)


def sample_noise(latents: torch.Tensor, offset: OffsetNoise, step: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise, plus a per-sample, per-channel constant (offset noise) where it applies.

    The constant lets the model shift an image's mean brightness, which plain noise almost
    never asks of it (Guttenberg's offset noise; Mitsua used 0.02 over its last steps).
    """
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    if offset.strength == 0 or step < offset.start_step:
        return noise
    batch, channels = latents.shape[:2]
    shift = torch.randn((batch, channels, 1, 1), generator=generator, device=latents.device, dtype=latents.dtype)
    applies = torch.rand((batch, 1, 1, 1), generator=generator, device=latents.device) < offset.probability
    return noise + offset.strength * shift * applies


def target(scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor,
           timesteps: torch.Tensor) -> torch.Tensor:
    if scheduler.config.prediction_type == "epsilon":
        return noise
    return scheduler.get_velocity(latents, noise, timesteps)


def snr_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023), as diffusers' train_text_to_image computes them."""
    snr = compute_snr(scheduler, timesteps)
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    return clipped / snr if scheduler.config.prediction_type == "epsilon" else clipped / (snr + 1)


@dataclass
class StepLoss:
    loss: torch.Tensor  # the scalar to minimise
    per_sample: torch.Tensor  # unweighted MSE per sample, for the loss-by-timestep logs
    timesteps: torch.Tensor


@dataclass
class DiffusionObjective:
    scheduler: DDPMScheduler
    offset_noise: OffsetNoise
    snr_gamma: float | None

    @classmethod
    def from_config(cls, job: DiffusionJob) -> "DiffusionObjective":
        return cls(noise_scheduler(job.noise, job.prediction), job.offset_noise, job.snr_gamma)

    def __call__(self, model: Denoiser, latents: torch.Tensor, states: torch.Tensor, generator: torch.Generator,
                 step: int) -> StepLoss:
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  generator=generator, device=latents.device)
        noise = sample_noise(latents, self.offset_noise, step, generator)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        prediction = model(noisy, timesteps, states).float()
        per_sample = F.mse_loss(prediction, target(self.scheduler, latents, noise, timesteps).float(),
                                reduction="none").mean(dim=tuple(range(1, prediction.ndim)))
        weights = 1.0 if self.snr_gamma is None else snr_weights(self.scheduler, timesteps, self.snr_gamma)
        return StepLoss((per_sample * weights).mean(), per_sample.detach(), timesteps)


def timestep_bins(per_sample: torch.Tensor, timesteps: torch.Tensor, total: int,
                  bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of losses, count) per equal-width bin of timesteps, to average over many steps."""
    index = (timesteps * bins // total).clamp(max=bins - 1)
    sums = torch.zeros(bins, device=per_sample.device).index_add_(0, index, per_sample.float())
    counts = torch.zeros(bins, device=per_sample.device).index_add_(0, index, torch.ones_like(per_sample).float())
    return sums, counts


Reconstructor = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # (pixels, gen) -> (rec, kl)


@dataclass
class AutoencoderLoss:
    """Reconstruction (L1) + KL to a unit Gaussian (+ LPIPS where its weights are available locally)."""

    kl_weight: float
    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    perceptual_weight: float = 0.0

    def __call__(self, model: Reconstructor, pixels: torch.Tensor,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
        reconstruction, kl = model(pixels, generator)
        reconstruction = reconstruction.float()
        terms = {"reconstruction": (reconstruction - pixels.float()).abs().mean(), "kl": kl.float().mean()}
        loss = terms["reconstruction"] + self.kl_weight * terms["kl"]
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(reconstruction, pixels.float()).mean()
            loss = loss + self.perceptual_weight * terms["perceptual"]
        return {"loss": loss} | {k: v.detach() for k, v in terms.items()}
