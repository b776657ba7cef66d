"""The two jobs the loop runs: what each trains, its loss on a batch, its validation and export.

The loop (`train.loop`) knows nothing of autoencoders or UNets; a task knows nothing of
accelerate beyond the device it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import nn

from train import cache, data, models, objective, sample
from train.config import DataConfig, TrainConfig


class AutoencoderTask:
    """AutoencoderKL from scratch (or fine-tuned): reconstruction + KL (+ LPIPS)."""

    def __init__(self, config: TrainConfig, shards: list[str], out: Path, device: torch.device):
        job = config.autoencoder
        self.config, self.shards, self.device = config, shards, device
        self.stream_shards, self.decoder = shards, data.Decoder  # pixels, also when data.cache is set
        self.network = models.build("autoencoder", job.model, init=job.init)
        self.model = models.Reconstructor(self.network)
        perceptual = None
        if job.perceptual is not None:
            from train.perceptual import LPIPS

            perceptual = LPIPS(job.perceptual).to(device)
        self.loss = objective.AutoencoderLoss(job.kl_weight, perceptual,
                                              job.perceptual.weight if job.perceptual else 0.0)
        self.references = data.first_samples(shards, config.data, config.seed, job.validation.images)

    def losses(self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator,
               step: int) -> dict[str, torch.Tensor]:
        return self.loss(model, batch["pixels"].to(self.device), generator)

    def window_logs(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        return {}

    def use_data(self, settings: DataConfig) -> None:
        """A new phase's data settings; the reconstruction references stay the fixed square set."""

    @torch.no_grad()
    def validate(self, step: int, path: Path) -> Path:
        """Reference images over their reconstructions (posterior mode), labelled with their keys."""
        pixels = self.references["pixels"].to(self.device)
        reconstruction = self.network.decode(self.network.encode(pixels).latent_dist.mode()).sample
        keys = self.references["keys"]
        return sample.save_grid(sample.to_images(pixels) + sample.to_images(reconstruction),
                                keys + [f"reconstruction of {k}" for k in keys], path, step, columns=len(keys))

    @torch.no_grad()
    def scaling_factor(self) -> float:
        """1 / std of the latents, so diffusion sees unit variance (SD v1's 0.18215 came from this)."""
        job = self.config.autoencoder
        if job.scaling_factor != "auto":
            return float(job.scaling_factor)
        pixels = data.first_samples(self.shards, self.config.data, self.config.seed, job.scaling_samples)["pixels"]
        latents = torch.cat([self.network.encode(chunk.to(self.device)).latent_dist.mode().float()
                             for chunk in pixels.split(self.config.data.batch_size)])
        return float(1.0 / latents.std())

    def provenance(self) -> dict[str, Any]:
        return {}

    def export(self, folder: Path) -> None:
        self.network.register_to_config(scaling_factor=self.scaling_factor())
        self.network.save_pretrained(folder)


class DiffusionTask:
    """A UNet on the latents of a frozen autoencoder, conditioned by a frozen open_clip tower."""

    def __init__(self, config: TrainConfig, shards: list[str], out: Path, device: torch.device):
        job = config.diffusion
        self.config, self.device = config, device
        vae_path = Path(job.autoencoder) if job.autoencoder else out / "autoencoder" / "final"
        self.vae = models.load_autoencoder(vae_path, device)
        self.vae_path = vae_path
        self.encoder = models.ConditioningEncoder(job.conditioning).to(device)
        self.network = models.build("unet", job.model, job.overrides, job.init)
        models.check_fit(self.network, self.encoder, self.vae, job.model)
        self.cache = (cache.open_cache(config, shards, vae_path, self.vae, self.encoder)
                      if config.data.cache else None)
        self.stream_shards = self.cache.shards if self.cache else shards
        self.decoder = cache.Decoder if self.cache else data.Decoder
        self.unconditional_states = self.encoder.unconditional(1) if self.cache else None
        self.model = self.network
        self.objective = objective.DiffusionObjective.from_config(job)
        self.use_data(config.data)
        self.references = (data.first_samples(shards, config.data, config.seed, job.validation.images)
                           if job.conditioning.encoder == "image" else None)
        self.bin_sums = torch.zeros(job.timestep_bins, device=device)
        self.bin_counts = torch.zeros(job.timestep_bins, device=device)

    def losses(self, model: nn.Module, batch: dict[str, Any], generator: torch.Generator,
               step: int) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            latents, states = self._encoded(batch, generator)
        result = self.objective(lambda x, t, c: model(x, t, c).sample, latents.float(), states, generator, step)
        sums, counts = objective.timestep_bins(result.per_sample, result.timesteps,
                                               self.objective.scheduler.config.num_train_timesteps,
                                               len(self.bin_sums))
        self.bin_sums += sums
        self.bin_counts += counts
        return {"loss": result.loss, "mse": result.per_sample.mean()}

    def use_data(self, settings: DataConfig) -> None:
        """Validation samples at the size being trained: the square resolution, or the squarest bucket."""
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        width, height = (data.nearest_bucket(1, 1, data.bucket_sizes(settings.buckets)) if settings.buckets
                         else (settings.resolution, settings.resolution))
        self.latent_shape = (self.vae.config.latent_channels, height // factor, width // factor)

    def _encoded(self, batch: dict[str, Any], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled latents drawn from the autoencoder's distribution, and the conditioning states."""
        if self.cache is None:
            pixels = batch["pixels"].to(self.device)
            distribution = self.vae.encode(pixels).latent_dist
            states = self.encoder(batch["captions"], pixels, batch["dropped"])
        else:
            distribution = DiagonalGaussianDistribution(batch["latent_dist"].to(self.device))
            dropped = batch["dropped"].to(self.device).view(-1, 1, 1)
            states = torch.where(dropped, self.unconditional_states, batch["states"].to(self.device))
        return distribution.sample(generator=generator) * self.vae.config.scaling_factor, states

    def window_logs(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """Mean unweighted loss per timestep bin since the last call, over all processes."""
        sums, counts = reduce(self.bin_sums.clone()), reduce(self.bin_counts.clone())
        self.bin_sums.zero_()
        self.bin_counts.zero_()
        width = self.objective.scheduler.config.num_train_timesteps / len(sums)
        return {f"loss_by_t/{round(i * width):04d}-{round((i + 1) * width) - 1:04d}": float(s / c)
                for i, (s, c) in enumerate(zip(sums.tolist(), counts.tolist())) if c}

    def _conditions(self) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        validation = self.config.diffusion.validation
        if self.references is None:
            prompts = validation.prompts
            states = self.encoder(prompts, None, None)
            return states, self.encoder.unconditional(len(prompts)), prompts
        pixels = self.references["pixels"].to(self.device)
        dropped = torch.zeros(len(pixels), dtype=torch.bool)
        states = self.encoder(self.references["captions"], pixels, dropped)
        return states, self.encoder.unconditional(len(pixels)), [f"variation of {k}" for k in self.references["keys"]]

    @torch.no_grad()
    def validate(self, step: int, path: Path) -> Path:
        """Samples from fixed noise, one per prompt (or reference image), with their prompts."""
        validation = self.config.diffusion.validation
        states, unconditional, labels = self._conditions()
        generators = [torch.Generator().manual_seed(validation.seed + i) for i in range(len(states))]
        scheduler = sample.make_scheduler(self.objective.scheduler.config, "ddim")
        latents = sample.guided_latents(lambda x, t, c: self.network(x, t, c).sample, scheduler, states,
                                        unconditional, self.latent_shape, validation.guidance_scale,
                                        validation.inference_steps, generators)
        images = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return sample.save_grid(sample.to_images(images), labels, path, step)

    def export(self, folder: Path) -> None:
        """A self-contained model folder: UNet, the frozen autoencoder and encoder it was trained with, schedule."""
        self.network.save_pretrained(folder / "unet")
        self.vae.save_pretrained(folder / "vae")
        self.encoder.save(folder / "conditioning")
        self.objective.scheduler.save_pretrained(folder / "scheduler")

    def provenance(self) -> dict[str, Any]:
        record: dict[str, Any] = {"autoencoder": str(self.vae_path.resolve())}
        if self.cache:
            manifest = self.cache.manifest
            record["cache"] = {"folder": str(self.cache.folder.resolve()), "variants": manifest.job.variants,
                               "precision": manifest.job.precision,
                               "sizes": [str(geometry) for geometry in manifest.encoders.geometries]}
        return record


TASKS = {"autoencoder": AutoencoderTask, "diffusion": DiffusionTask}
