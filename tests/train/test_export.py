"""Export of the tiny trained model: what diffusers, transformers and LDM readers see of it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from train import export, sample
from train.config import ConditioningConfig
from train.generate import Model, load
from train.models import ConditioningEncoder

PROMPTS = [
    "a red square",
    "Hello, World!! Is it 3:30 p.m.? (yes) -- #tag @me 100% \"quoted\" it's",
    "café naïve Ünïcödé ☃ 日本語のテキスト emoji 🎨🖌️",
    "",
    "   spaced\tout\n  prompt   ",
    "!",
    " ".join(f"word{i}" for i in range(120)),  # far past 77 tokens: truncated, ends with end-of-text
]


@pytest.fixture(scope="module")
def model(model_folder: Path) -> Model:
    return load(model_folder)


@pytest.fixture(scope="module")
def exported(model_folder: Path, tmp_path_factory) -> dict:
    """The default export (what `cleanroom export --no-card` writes; the command is tested in tests/audit), made
    once for the module; its summary."""
    return export.export(model_folder, tmp_path_factory.mktemp("export") / "sd")


def tiny_encoder() -> ConditioningEncoder:
    return ConditioningEncoder(ConditioningConfig(model="cleanroom-tiny-text", layer="penultimate"))


def test_export_writes_the_pipeline_folder_and_the_single_file(exported: dict):
    folder = Path(exported["pipeline"])
    assert Path(exported["single_file"]) == folder / "test.safetensors"
    assert (folder / "test.safetensors").is_file()
    assert exported["sampler"] == "DPM++ 2M Karras" and exported["text_encoder_layers"] == 1  # penultimate of 2
    index = json.loads((folder / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
    assert index["scheduler"] == ["diffusers", "DPMSolverMultistepScheduler"]
    assert not folder.with_name("sd.partial").exists()


def test_tokenizer_gives_open_clip_token_ids(exported: dict, model: Model):
    from transformers import AutoTokenizer, CLIPTokenizer

    expected = model.encoder.tokens(PROMPTS)
    folder = Path(exported["pipeline"]) / "tokenizer"
    for tokenizer in (CLIPTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)):  # slow, fast
        ids = tokenizer(PROMPTS, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        assert torch.equal(ids, expected), type(tokenizer).__name__
    assert expected[-1, -1] == 49407 and expected[3, 2] == 0  # truncated prompt ends with eot; padding is 0


def test_text_encoder_gives_the_conditioning_states(exported: dict, model: Model):
    from transformers import CLIPTextModel

    text_encoder = CLIPTextModel.from_pretrained(Path(exported["pipeline"]) / "text_encoder").eval()
    with torch.no_grad():
        states = text_encoder(model.encoder.tokens(PROMPTS)).last_hidden_state
    torch.testing.assert_close(states, model.encoder(PROMPTS, None, None), atol=1e-5, rtol=1e-5)


def test_pipeline_loads_offline_and_makes_an_image_of_the_requested_size(exported: dict):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(exported["pipeline"], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    images = pipe("a red square!", height=32, width=48, num_inference_steps=2, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 32, 48, 3) and images.min() >= 0 and images.max() <= 1


def test_single_file_loads_in_diffusers_with_the_exported_weights(exported: dict):
    from diffusers import StableDiffusionPipeline

    folder = exported["pipeline"]
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    single = StableDiffusionPipeline.from_single_file(exported["single_file"], config=folder, local_files_only=True)
    for part in ("unet", "vae", "text_encoder"):
        want, got = getattr(pipe, part).state_dict(), getattr(single, part).state_dict()
        assert want.keys() == got.keys(), part
        assert [k for k in want if not torch.equal(want[k], got[k])] == [], part


def test_single_file_has_the_ldm_layout(exported: dict, model: Model):
    from safetensors import safe_open

    with safe_open(exported["single_file"], "pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
        q = f.get_tensor("first_stage_model.encoder.mid.attn_1.q.weight")
    assert all(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.model."))
               for k in keys)
    # tiny UNet: 2 levels, 1 resnet each; attention on the second level only
    for key in ("time_embed.0.weight", "input_blocks.0.0.weight", "input_blocks.1.0.in_layers.2.weight",
                "input_blocks.2.0.op.weight", "input_blocks.3.1.proj_in.weight", "middle_block.1.norm.weight",
                "middle_block.2.emb_layers.1.weight", "output_blocks.0.1.transformer_blocks.0.attn2.to_k.weight",
                "output_blocks.1.2.conv.weight", "output_blocks.3.0.skip_connection.weight", "out.2.bias"):
        assert "model.diffusion_model." + key in keys, key
    # tiny autoencoder: 3 levels; the decoder's first diffusers level is LDM's last
    for key in ("encoder.down.2.block.0.nin_shortcut.weight", "encoder.down.1.downsample.conv.weight",
                "decoder.up.2.upsample.conv.weight", "decoder.up.0.block.1.conv2.weight",
                "decoder.mid.block_2.norm1.bias",
                "encoder.norm_out.weight", "quant_conv.weight", "post_quant_conv.weight"):
        assert "first_stage_model." + key in keys, key
    assert q.shape == (64, 64, 1, 1)
    tower = {"cond_stage_model.model." + k for k in model.encoder.tower.state_dict()}
    assert "cond_stage_model.model.transformer.resblocks.1.mlp.c_fc.weight" in tower <= keys  # all blocks kept
    assert metadata["cleanroom.model"] == "test" and metadata["format"] == "pt"
    assert metadata["cleanroom.conditioning"] == "open_clip cleanroom-tiny-text, penultimate layer"


def test_export_refuses_an_existing_folder(model: Model, tmp_path: Path):
    with pytest.raises(export.ExportError, match="already exists"):
        export.save_pipeline(model, tmp_path)


def test_the_text_encoder_of_an_image_conditioned_model_is_refused():
    image = ConditioningEncoder(ConditioningConfig(encoder="image", model="cleanroom-tiny-text"))
    with pytest.raises(export.ExportError, match="a text encoder is exported for text-conditioned models only"):
        export.text_encoder(image)


def reference_a1111_hashes(path: Path) -> tuple[str, str]:
    """What AUTOMATIC1111's modules/hashes.py and sd_models.py compute for a checkpoint: the short hash (first 10
    hex of the file's sha256) and the old model hash (sha256 of 0x10000 bytes at 0x100000, first 8 hex)."""
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()[:10], hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def test_sample_pngs_carry_the_a1111_hash_of_the_single_file(exported: dict, model: Model, tmp_path: Path):
    from train.generate import SampleSettings, read_infotext, sample_to_folder

    single = Path(exported["single_file"])
    assert single.stat().st_size > 0x110000  # the old hash reads bytes the file has
    short, old = reference_a1111_hashes(single)
    assert (exported["a1111"]["short_hash"], exported["a1111"]["old_hash"]) == (short, old)
    png = sample_to_folder(model, ["a red square"], SampleSettings(steps=1), tmp_path / "samples")[0]
    assert read_infotext(png)["Model hash"] == short
    again = export.write_single_file(model, tmp_path / "again.safetensors")
    assert again.read_bytes() == single.read_bytes()  # the same weights, the same file, the same hash


def test_single_file_is_what_safetensors_reads(exported: dict, model: Model):
    from safetensors.torch import load_file

    state = load_file(exported["single_file"])
    want = export.ldm_state_dict(model)
    assert state.keys() == want.keys() and all(torch.equal(state[k], want[k]) for k in want)


def test_original_config_beside_the_single_file_builds_the_exported_networks(exported: dict, model: Model):
    from diffusers.loaders.single_file_utils import (create_unet_diffusers_config_from_ldm,
                                                     create_vae_diffusers_config_from_ldm)
    from safetensors.torch import load_file

    path = Path(exported["original_config"])
    assert path == Path(exported["single_file"]).with_suffix(".yaml")
    text = path.read_text()
    assert text.startswith("# norm_num_groups unet 8, vae 8: LDM code normalises in 32 groups")  # the tiny sizes
    config = yaml.safe_load(text)
    params = config["model"]["params"]
    assert config["model"]["target"] == "ldm.models.diffusion.ddpm.LatentDiffusion"
    assert params["scale_factor"] == model.vae.config.scaling_factor != 0.18215  # measured by the autoencoder job
    assert params["image_size"] == 8 and params["channels"] == 4 and params["parameterization"] == "eps"
    assert (params["linear_start"], params["linear_end"], params["beta_schedule"]) == (0.00085, 0.012, "linear")
    cond = params["cond_stage_config"]
    assert cond["target"] == "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder"
    assert cond["params"] == {"arch": "cleanroom-tiny-text", "version": None, "freeze": True, "layer": "penultimate"}
    checkpoint = load_file(exported["single_file"])
    unet = create_unet_diffusers_config_from_ldm(config, checkpoint)
    for key in ("block_out_channels", "down_block_types", "up_block_types", "layers_per_block", "cross_attention_dim",
                "attention_head_dim", "use_linear_projection", "in_channels", "out_channels"):
        assert unet[key] == model.unet.config[key] or list(unet[key]) == list(model.unet.config[key]), key
    vae = create_vae_diffusers_config_from_ldm(config, checkpoint)
    assert vae["scaling_factor"] == model.vae.config.scaling_factor
    for key in ("block_out_channels", "latent_channels", "layers_per_block"):
        assert list(np.atleast_1d(vae[key])) == list(np.atleast_1d(model.vae.config[key])), key


def _layer_scale(encoder: ConditioningEncoder) -> None:
    from open_clip.transformer import LayerScale

    encoder.tower.transformer.resblocks[0].ls_1 = LayerScale(32)


def _hugging_face_tower(encoder: ConditioningEncoder) -> None:
    from open_clip.hf_model import HFTextEncoder

    tower = HFTextEncoder.__new__(HFTextEncoder)  # its real __init__ would fetch a model from the hub
    nn.Module.__init__(tower)
    encoder.tower = tower


def _extra_weight(encoder: ConditioningEncoder) -> None:
    encoder.tower.register_parameter("prompt_bias", nn.Parameter(torch.zeros(32)))


UNSUPPORTED = {
    "LayerScale": _layer_scale,
    "no causal mask": lambda e: setattr(e.tower, "attn_mask", None),
    "cls embedding": lambda e: setattr(e.tower, "cls_emb", nn.Parameter(torch.zeros(32))),
    "RMSNorm norms": lambda e: setattr(e.tower, "ln_final", nn.RMSNorm(32)),
    "Hugging Face text tower": _hugging_face_tower,
    "extra weights .*prompt_bias": _extra_weight,
    "SiLU": lambda e: setattr(e.tower.transformer.resblocks[0].mlp, "gelu", nn.SiLU()),
}


@pytest.mark.parametrize("feature", UNSUPPORTED)
def test_unsupported_towers_are_refused_naming_the_feature(feature: str):
    encoder = tiny_encoder()
    UNSUPPORTED[feature](encoder)
    with pytest.raises(export.ExportError, match=f"open_clip model 'cleanroom-tiny-text': .*{feature}"):
        export.text_encoder(encoder)


@pytest.mark.parametrize("name,karras", [("ddim", False), ("euler", False), ("euler-a", False), ("dpmpp-2m", True),
                                         ("pndm", False), ("lms", True)])
def test_exported_pipeline_and_our_sampler_draw_the_same_image(exported: dict, model: Model, name, karras):
    from diffusers import StableDiffusionPipeline

    from train.generate import SampleSettings, generate

    settings = SampleSettings(sampler=name, karras=karras, steps=6, cfg_scale=6.0, negative_prompt="green",
                              width=48, height=32, seed=11)
    ours = np.stack([np.asarray(im, dtype=np.float32) for im in generate(model, ["a red square", "blue"], settings)])
    pipe = StableDiffusionPipeline.from_pretrained(exported["pipeline"])
    pipe.scheduler = sample.make_scheduler(pipe.scheduler.config, name, karras)
    theirs = pipe(["a red square", "blue"], negative_prompt=["green"] * 2, num_inference_steps=6, guidance_scale=6.0,
                  width=48, height=32, generator=[torch.Generator().manual_seed(s) for s in (11, 12)],
                  output_type="np").images * 255
    assert np.abs(ours - theirs).max() <= 1.0  # rounding to 8 bits only
    assert ours.std() > 0


def test_extras_are_written_beside_the_weights_and_their_errors_leave_nothing(model: Model, tmp_path: Path):
    out = export.save_pipeline(model, tmp_path / "sd", extras=lambda folder: {"NOTE.md": f"{folder.name}\n".encode()})
    assert (out / "NOTE.md").read_text() == "final\n" and (out / "model_index.json").is_file()

    def fails(folder: Path) -> dict[str, bytes]:
        raise FileNotFoundError(f"{folder}: nothing to describe")

    with pytest.raises(FileNotFoundError, match="nothing to describe"):
        export.export_diffusers(model.folder, tmp_path / "other", extras=fails)
    assert not (tmp_path / "other").exists() and not (tmp_path / "other.partial").exists()
