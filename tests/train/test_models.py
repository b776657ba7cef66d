from __future__ import annotations

from pathlib import Path

import pytest
import torch

from train import models
from train.config import ConditioningConfig


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_named_sizes_are_data_files():
    assert {"tiny", "sd1-base"} <= set(models.available("unet"))
    assert {"tiny", "sd1-base"} <= set(models.available("autoencoder"))
    with pytest.raises(ValueError, match="unknown unet size 'huge'; known: .*sd1-base.*tiny"):
        models.named_config("unet", "huge")


def test_sd1_base_has_stable_diffusion_v1_sizes():
    with torch.device("meta"):  # shapes only: no 3 GB of weights in a test
        unet = models.build("unet", "sd1-base")
        vae = models.build("autoencoder", "sd1-base")
    assert parameters(unet) == 859_520_964  # SD v1's UNet
    assert parameters(vae) == 83_653_863  # SD v1's AutoencoderKL
    assert vae.config.scaling_factor == pytest.approx(0.18215)


def test_tiny_attends_only_from_the_second_block():
    config = models.named_config("unet", "tiny")
    assert config["down_block_types"][0] == "DownBlock2D"
    unet = models.build("unet", "tiny", {"cross_attention_dim": 48})
    assert unet.config.cross_attention_dim == 48


def test_fine_tuning_init_from_diffusers_folder_checkpoint_folder_and_file(tmp_path: Path):
    torch.manual_seed(0)
    source = models.build("autoencoder", "tiny")
    source.save_pretrained(tmp_path / "diffusers")
    from safetensors.torch import save_file

    (tmp_path / "checkpoint").mkdir()
    # Our checkpoints hold the autoencoder inside the Reconstructor wrapper, under "vae.".
    save_file(models.Reconstructor(source).state_dict(), tmp_path / "checkpoint" / "model.safetensors")
    save_file(source.state_dict(), tmp_path / "weights.safetensors")
    for init in ("diffusers", "checkpoint", "weights.safetensors"):
        loaded = models.build("autoencoder", "tiny", init=str(tmp_path / init))
        assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values())), init


def test_fine_tuning_init_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no unet checkpoint here"):
        models.build("unet", "tiny", init=str(tmp_path))
    from safetensors.torch import save_file

    save_file(models.build("autoencoder", "tiny").state_dict(), tmp_path / "vae.safetensors")
    with pytest.raises(ValueError, match="do not fit the unet size 'tiny'"):
        models.build("unet", "tiny", init=str(tmp_path / "vae.safetensors"))


@pytest.fixture(scope="module")
def text_encoders() -> dict[str, models.ConditioningEncoder]:
    torch.manual_seed(0)
    last = models.ConditioningEncoder(ConditioningConfig(model="cleanroom-tiny-text", layer="last"))
    torch.manual_seed(0)
    penultimate = models.ConditioningEncoder(ConditioningConfig(model="cleanroom-tiny-text", layer="penultimate"))
    return {"last": last, "penultimate": penultimate}


def test_text_states_of_the_last_layer_are_open_clips_token_states(text_encoders):
    import open_clip

    torch.manual_seed(0)
    clip = open_clip.create_model("cleanroom-tiny-text", pretrained=None).eval()
    encoder = text_encoders["last"]
    tokens = encoder.tokens(["a red square", ""])
    states = encoder(["a red square", ""], None, None)
    assert states.shape == (2, 77, 32) and encoder.width == 32
    # open_clip's own pooled text feature is the state at the end-of-text token, projected.
    pooled = states[torch.arange(2), tokens.argmax(dim=-1)] @ clip.text_projection
    assert torch.allclose(pooled, clip.encode_text(tokens), atol=1e-5)
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not hasattr(encoder.tower, "visual") or encoder.tower.visual is None


def test_penultimate_states_skip_the_last_block(text_encoders):
    last, penultimate = text_encoders["last"], text_encoders["penultimate"]
    tower = last.tower
    tokens = last.tokens(["a red square"])
    x = tower.token_embedding(tokens) + tower.positional_embedding
    x = tower.transformer.resblocks[0](x, attn_mask=tower.attn_mask)
    expected = tower.ln_final(x)
    got = penultimate(["a red square"], None, None)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, last(["a red square"], None, None), atol=1e-3)


def test_unconditional_text_states_are_the_empty_prompt(text_encoders):
    encoder = text_encoders["penultimate"]
    assert torch.equal(encoder.unconditional(2), encoder(["", ""], None, None))


def test_image_conditioning_gives_one_token_and_zeros_when_dropped():
    encoder = models.ConditioningEncoder(ConditioningConfig(encoder="image", model="cleanroom-tiny-text"))
    pixels = torch.rand(3, 3, 48, 48) * 2 - 1
    states = encoder([], pixels, torch.tensor([False, True, False]))
    assert states.shape == (3, 1, encoder.width) == (3, 1, 32)
    assert states[1].abs().sum() == 0 and states[0].abs().sum() > 0
    assert torch.equal(encoder.unconditional(2), torch.zeros(2, 1, 32))


def test_parts_that_do_not_fit_fail_with_the_setting_to_change(text_encoders):
    unet = models.build("unet", "tiny", {"cross_attention_dim": 64})
    vae = models.build("autoencoder", "tiny")
    with pytest.raises(ValueError, match="set diffusion.overrides.cross_attention_dim: 32"):
        models.check_fit(unet, text_encoders["last"], vae, "tiny")


def test_unknown_open_clip_model_fails_at_construction():
    with pytest.raises(RuntimeError):
        models.ConditioningEncoder(ConditioningConfig(model="no-such-clip"))
