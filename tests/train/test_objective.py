from __future__ import annotations

import pytest
import torch
from torch import nn

from train import objective
from train.config import NoiseSchedule, OffsetNoise


class TwoLayer(nn.Module):
    """A dummy denoiser: two 1x1 convolutions, ignoring timestep and conditioning."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(4, 8, 1), nn.SiLU(), nn.Conv2d(8, 4, 1))

    def forward(self, x, t, states):
        return self.net(x)


def make(prediction="epsilon", snr_gamma=None, offset=OffsetNoise()) -> objective.DiffusionObjective:
    return objective.DiffusionObjective(objective.noise_scheduler(NoiseSchedule(), prediction), offset, snr_gamma)


def generator(seed=0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


LATENTS = torch.randn(6, 4, 8, 8, generator=generator(9))


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_a_model_predicting_the_target_has_zero_loss(prediction):
    objective_ = make(prediction)
    scheduler = objective_.scheduler
    seen = {}

    def oracle(noisy, t, states):
        # Recover the noise from the noisy latents, then give what the objective asks for.
        alpha = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        noise = (noisy - alpha.sqrt() * LATENTS) / (1 - alpha).sqrt()
        seen["t"] = t
        return objective.target(scheduler, LATENTS, noise, t)

    result = objective_(oracle, LATENTS, torch.zeros(6, 1, 4), generator(), step=0)
    assert result.loss.item() < 1e-8
    assert torch.equal(result.timesteps, seen["t"])


def test_v_target_is_the_schedulers_velocity():
    scheduler = make("v_prediction").scheduler
    noise, t = torch.randn_like(LATENTS), torch.tensor([0, 10, 100, 500, 900, 999])
    alpha = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = alpha.sqrt() * noise - (1 - alpha).sqrt() * LATENTS
    assert torch.allclose(objective.target(scheduler, LATENTS, noise, t), expected, atol=1e-5)
    assert torch.equal(objective.target(make().scheduler, LATENTS, noise, t), noise)


@pytest.mark.parametrize("prediction, extra", [("epsilon", 0.0), ("v_prediction", 1.0)])
def test_min_snr_weights(prediction, extra):
    scheduler = make(prediction).scheduler
    t = torch.tensor([0, 50, 300, 999])
    alpha = scheduler.alphas_cumprod[t]
    snr = alpha / (1 - alpha)
    expected = torch.minimum(snr, torch.tensor(5.0)) / (snr + extra)
    assert torch.allclose(objective.snr_weights(scheduler, t, 5.0), expected, rtol=1e-5)


def test_snr_weighting_changes_the_loss_and_trains_the_dummy():
    model = TwoLayer()
    plain = make(snr_gamma=None)(model, LATENTS, None, generator(), 0)
    weighted = make(snr_gamma=5.0)(model, LATENTS, None, generator(), 0)
    assert torch.equal(plain.per_sample, weighted.per_sample)  # same draws, only the weights differ
    assert plain.loss.item() != pytest.approx(weighted.loss.item())
    weighted.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_same_generator_same_loss():
    model = TwoLayer()
    a = make(snr_gamma=5.0)(model, LATENTS, None, generator(3), 0)
    b = make(snr_gamma=5.0)(model, LATENTS, None, generator(3), 0)
    c = make(snr_gamma=5.0)(model, LATENTS, None, generator(4), 0)
    assert torch.equal(a.loss, b.loss) and not torch.equal(a.loss, c.loss)


def test_offset_noise_adds_a_per_channel_constant_when_active():
    plain = objective.sample_noise(LATENTS, OffsetNoise(), 0, generator())
    offset = OffsetNoise(strength=0.5, probability=1.0, start_step=10)
    before = objective.sample_noise(LATENTS, offset, 9, generator())
    after = objective.sample_noise(LATENTS, offset, 10, generator())
    assert torch.equal(before, plain)
    shift = after - plain
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift), atol=1e-6)  # constant over H, W
    assert shift[:, :, 0, 0].abs().min() > 0


def test_offset_noise_probability_picks_samples():
    latents = torch.zeros(400, 4, 2, 2)
    plain = objective.sample_noise(latents, OffsetNoise(), 0, generator())
    noisy = objective.sample_noise(latents, OffsetNoise(strength=1.0, probability=0.25), 0, generator())
    shifted = ((noisy - plain).abs().flatten(1).amax(1) > 0).float().mean().item()
    assert 0.18 < shifted < 0.32
    none = objective.sample_noise(latents, OffsetNoise(strength=1.0, probability=0.0), 0, generator())
    assert torch.equal(none, plain)


def test_timestep_bins_sum_and_count():
    sums, counts = objective.timestep_bins(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0, 99, 100, 999]),
                                           1000, 10)
    assert counts.tolist() == [2, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert sums[0].item() == 3.0 and sums[1].item() == 3.0 and sums[9].item() == 4.0


def test_autoencoder_loss_terms_and_perceptual_hook():
    pixels = torch.rand(2, 3, 8, 8) * 2 - 1

    def identity(x, g):
        return x.clone(), torch.full((x.shape[0],), 2.0)

    result = objective.AutoencoderLoss(kl_weight=0.5)(identity, pixels, generator())
    assert result["reconstruction"].item() == 0.0 and result["kl"].item() == 2.0
    assert result["loss"].item() == pytest.approx(1.0)
    with_perceptual = objective.AutoencoderLoss(0.5, lambda a, b: torch.full((a.shape[0],), 3.0), 2.0)
    result = with_perceptual(identity, pixels, generator())
    assert result["perceptual"].item() == 3.0 and result["loss"].item() == pytest.approx(7.0)
