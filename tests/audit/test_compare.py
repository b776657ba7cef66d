from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from audit import compare
from audit.compare import WEIGHTS
from train import models


def save_pipeline(folder: Path, seed: int, unet_overrides: dict | None = None) -> Path:
    """unet/ and vae/ diffusers folders of tiny models initialised from `seed`, as our model folders hold."""
    torch.manual_seed(seed)
    models.build("unet", "tiny", unet_overrides).save_pretrained(folder / "unet")
    models.build("autoencoder", "tiny").save_pretrained(folder / "vae")
    return folder


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / f"{WEIGHTS}.safetensors")


def write_component(folder: Path, like: Path, state: dict[str, torch.Tensor]) -> Path:
    """A diffusers component folder: `like`'s config.json with these weights."""
    folder.mkdir(parents=True)
    shutil.copy(like / "config.json", folder / "config.json")
    save_file({k: v.contiguous() for k, v in state.items()}, folder / f"{WEIGHTS}.safetensors")
    return folder


@pytest.fixture(scope="module")
def model_a(tmp_path_factory) -> Path:
    return save_pipeline(tmp_path_factory.mktemp("a"), seed=0)


@pytest.fixture(scope="module")
def model_b(tmp_path_factory) -> Path:
    return save_pipeline(tmp_path_factory.mktemp("b"), seed=1)


def modules(result: dict, component: str) -> dict[str, dict]:
    return {m["module"]: m for m in result["components"][component]["modules"]}


def nothing_left_out(component: dict) -> bool:
    return not (component["shape_mismatch"] or component["only_in_a"] or component["only_in_b"])


def test_a_model_against_itself_is_one_everywhere(model_a: Path):
    result = compare.compare(model_a, model_a)
    assert set(result["components"]) == {"unet", "vae"} and result["missing"] == {}
    for name, component in result["components"].items():
        assert nothing_left_out(component)
        for m in component["modules"]:
            assert m["weights"]["cosine"] in (1.0, None)  # None: a module of norms only, e.g. conv_norm_out
            assert m["vectors"]["cosine"] == 1.0
            assert m["weights"]["identical"] == m["weights"]["tensors"]
        assert component["summary"]["weights"]["cosine"] == 1.0
        assert component["summary"]["weights"]["weighted_mean"] == 1.0
    unet = modules(result, "unet")
    assert list(unet) == ["unet.conv_in", "unet.time_embedding", "unet.down_blocks.0", "unet.down_blocks.1",
                          "unet.mid_block", "unet.up_blocks.0", "unet.up_blocks.1", "unet.conv_norm_out",
                          "unet.conv_out"]  # in the order data flows through them
    assert unet["unet.conv_norm_out"]["weights"]["cosine"] is None
    assert {"vae.encoder.down_blocks.1", "vae.decoder.up_blocks.2", "vae.encoder.mid_block",
            "vae.quant_conv"} <= set(modules(result, "vae"))


def test_independently_initialised_models_are_near_zero_but_their_norms_are_not(model_a: Path, model_b: Path):
    result = compare.compare(model_a, model_b)
    for component in result["components"].values():
        assert nothing_left_out(component)
        for m in component["modules"]:
            cosine = m["weights"]["cosine"]
            # random directions in n dimensions: cosines of about 1/sqrt(n), 5 of those at most
            assert cosine is None or abs(cosine) < max(0.05, 5 / m["weights"]["params"] ** 0.5), m
            assert m["weights"]["identical"] == 0
        summary = component["summary"]
        assert abs(summary["weights"]["cosine"]) < 0.05 and abs(summary["weights"]["weighted_mean"]) < 0.05
        # GroupNorm scales start at 1 in both: why 1-D tensors are kept out of the cosine
        assert summary["vectors"]["cosine"] > 0.5


def test_a_fine_tuned_copy_is_near_one_only_where_it_changed(model_a: Path, tmp_path: Path):
    state = weights(model_a / "unet")
    generator = torch.Generator().manual_seed(0)
    for key in [k for k in state if k.startswith("down_blocks.1.")]:
        state[key] = state[key] + 0.01 * state[key].std() * torch.randn(state[key].shape, generator=generator)
    tuned = tmp_path / "tuned"
    write_component(tuned / "unet", model_a / "unet", state)
    shutil.copytree(model_a / "vae", tuned / "vae")
    result = compare.compare(model_a, tuned)
    unet = modules(result, "unet")
    assert 0.99 < unet["unet.down_blocks.1"]["weights"]["cosine"] < 1.0
    assert unet["unet.down_blocks.1"]["weights"]["identical"] == 0
    for name in ("unet.conv_in", "unet.down_blocks.0", "unet.mid_block", "unet.up_blocks.0", "unet.conv_out"):
        assert unet[name]["weights"]["cosine"] == 1.0, name
    assert 0.99 < result["components"]["unet"]["summary"]["weights"]["cosine"] < 1.0
    assert result["components"]["vae"]["summary"]["weights"]["cosine"] == 1.0


def test_differing_shapes_and_one_sided_tensors_are_listed_by_name(model_a: Path, tmp_path: Path, capsys):
    state = weights(model_a / "unet")
    state.pop("conv_out.bias")
    state["extra.weight"] = torch.ones(2, 2)
    state["conv_in.weight"] = torch.randn(32, 4, 1, 1)
    other = write_component(tmp_path / "unet", model_a / "unet", state)
    result = compare.compare(model_a, other)
    unet = result["components"]["unet"]
    assert unet["shape_mismatch"] == [{"name": "conv_in.weight", "a": [32, 4, 3, 3], "b": [32, 4, 1, 1]}]
    assert unet["only_in_a"] == ["conv_out.bias"] and unet["only_in_b"] == ["extra.weight"]
    assert modules(result, "unet")["unet.conv_in"]["not_compared"] == 1
    assert result["missing"] == {"vae": "only in A"}
    table = compare.markdown(result)
    for text in ("- conv_in.weight: A (32, 4, 3, 3), B (32, 4, 1, 1)", "Only in A (1), not compared:\n- conv_out.bias",
                 "Only in B (1), not compared:\n- extra.weight", "**vae: only in A**"):
        assert text in table


def test_a_training_checkpoint_and_a_diffusers_folder_of_the_same_weights_are_one(model_a: Path, tmp_path: Path):
    # Our checkpoints as accelerate saves them (train.loop): UNet keys as they are, the autoencoder under vae.
    unet_checkpoint = tmp_path / "diffusion" / "checkpoints" / "step-00000004"
    unet_checkpoint.mkdir(parents=True)
    save_file(weights(model_a / "unet"), unet_checkpoint / "model.safetensors")
    vae_file = tmp_path / "autoencoder.safetensors"
    save_file({f"vae.{k}": v for k, v in weights(model_a / "vae").items()}, vae_file)
    unet = compare.compare(unet_checkpoint, model_a / "unet")
    vae = compare.compare(model_a / "vae", vae_file)
    assert unet["a"]["kind"] == "training checkpoint" and vae["a"]["kind"] == "diffusers vae folder"
    for result, component in ((unet, "unet"), (vae, "vae")):
        assert nothing_left_out(result["components"][component])
        assert result["components"][component]["summary"]["weights"]["cosine"] == 1.0


def test_a_training_run_is_compared_with_its_own_checkpoint(model_folder: Path):
    run = model_folder.parent.parent  # OUT of OUT/diffusion/final
    checkpoint = sorted((run / "diffusion" / "checkpoints").iterdir())[-1]
    result = compare.compare(run, checkpoint)
    assert result["a"]["kind"] == "training run" and result["missing"] == {"vae": "only in A"}
    unet = result["components"]["unet"]
    assert nothing_left_out(unet)
    # final/ holds the EMA weights, the checkpoint the trained ones: a few steps apart, nearly the same
    assert 0.9 < unet["summary"]["weights"]["cosine"] <= 1.0


# Original-LDM names (as SD v1.5 ships) for the tiny models: the inverse of diffusers' converters.
RESNET_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
              "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
VAE_ATTENTION_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def ldm_unet_name(name: str, per_block: int, up_attention: set[int]) -> str:
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    layers = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    if name in layers:
        return layers[name]
    step = per_block + 1
    if match := re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)",
                             name):
        side, block, kind, index, rest = match.groups()
        block, index = int(block), int(index)
        if kind == "downsamplers":
            return f"input_blocks.{step * (block + 1)}.0.op.{rest.removeprefix('conv.')}"
        if kind == "upsamplers":
            return f"output_blocks.{step * block + per_block}.{2 if block in up_attention else 1}.{rest}"
        layer = step * block + index + 1 if side == "down" else step * block + index
        prefix = f"{'input' if side == 'down' else 'output'}_blocks.{layer}.{0 if kind == 'resnets' else 1}"
    else:
        kind, index, rest = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", name).groups()
        prefix = f"middle_block.{2 * int(index) if kind == 'resnets' else 1}"
    if kind == "resnets":
        first, _, tail = rest.partition(".")
        rest = f"{RESNET_LDM[first]}.{tail}"
    return f"{prefix}.{rest}"


def ldm_vae_name(name: str, blocks: int) -> str:
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    if name in DIFFUSERS_TO_LDM_MAPPING["vae"]:
        return DIFFUSERS_TO_LDM_MAPPING["vae"][name]
    if match := re.fullmatch(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\."
                             r"(\d+)\.(.+)", name):
        part, side, block, kind, index, rest = match.groups()
        block = int(block) if side == "down" else blocks - 1 - int(block)  # LDM counts decoder blocks upwards
        if kind == "resnets":
            return f"{part}.{side}.{block}.block.{index}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        return f"{part}.{side}.{block}.{side}sample.{rest}"
    part, kind, index, rest = re.fullmatch(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)",
                                           name).groups()
    if kind == "resnets":
        return f"{part}.mid.block_{int(index) + 1}.{rest}"
    layer, _, parameter = rest.rpartition(".")
    return f"{part}.mid.attn_1.{VAE_ATTENTION_LDM[layer]}.{parameter}"


def write_ldm_file(model: Path, path: Path) -> Path:
    """One SD-v1.5-style file: model.diffusion_model.*, first_stage_model.* (and a text encoder, ignored)."""
    unet, vae = weights(model / "unet"), weights(model / "vae")
    unet_config = json.loads((model / "unet" / "config.json").read_text())
    up_attention = {int(k.split(".")[1]) for k in unet if k.startswith("up_blocks.") and ".attentions." in k}
    state = {"model.diffusion_model." + ldm_unet_name(k, unet_config["layers_per_block"], up_attention): v
             for k, v in unet.items()}
    blocks = len(json.loads((model / "vae" / "config.json").read_text())["down_block_types"])
    for key, value in vae.items():
        # LDM's VAE attention is 1x1 convolutions where diffusers has linear layers
        ldm_value = value[:, :, None, None] if ".attentions." in key and value.ndim == 2 else value
        state["first_stage_model." + ldm_vae_name(key, blocks)] = ldm_value
    state["cond_stage_model.transformer.embeddings.weight"] = torch.zeros(3, 2)
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path


def test_an_original_ldm_file_is_renamed_with_the_other_sides_config(model_a: Path, model_b: Path, tmp_path: Path):
    ldm = write_ldm_file(model_a, tmp_path / "model.safetensors")
    result = compare.compare(ldm, model_a)
    assert result["a"]["kind"] == "original-LDM single file" and set(result["components"]) == {"unet", "vae"}
    for component in result["components"].values():
        assert nothing_left_out(component)
        assert component["summary"]["weights"]["cosine"] == 1.0 and component["summary"]["vectors"]["cosine"] == 1.0
    assert abs(compare.compare(model_b, ldm)["components"]["unet"]["summary"]["weights"]["cosine"]) < 0.05


def test_an_original_ldm_file_needs_a_diffusers_model_of_the_same_architecture(model_a: Path, tmp_path: Path):
    ldm = write_ldm_file(model_a, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="both original-LDM files"):
        compare.compare(ldm, ldm)
    checkpoint = tmp_path / "step-00000004"
    checkpoint.mkdir()
    save_file(weights(model_a / "unet"), checkpoint / "model.safetensors")
    with pytest.raises(ValueError, match=r"needs a diffusers config.*training checkpoint"):
        compare.compare(ldm, checkpoint)
    wider = save_pipeline(tmp_path / "wider", seed=0, unet_overrides={"layers_per_block": 2})
    with pytest.raises(ValueError, match="same architecture"):
        compare.compare(ldm, wider)


def test_depth_two_splits_blocks_into_their_children(model_a: Path):
    result = compare.compare(model_a, model_a, depth=2)
    assert {"unet.down_blocks.1.attentions.0", "unet.down_blocks.1.resnets.0", "unet.down_blocks.0.downsamplers.0",
            "unet.time_embedding.linear_1"} <= set(modules(result, "unet"))
    assert "vae.encoder.down_blocks.1.resnets.0" in modules(result, "vae")
    with pytest.raises(ValueError, match="--depth 0"):
        compare.compare(model_a, model_a, depth=0)


def test_bad_paths_are_named_with_what_was_expected(model_a: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere'}: no such file or folder; expected a "
                                                f"diffusers pipeline folder"):
        compare.compare(tmp_path / "nowhere", model_a)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'empty'}: no weights recognised"):
        compare.compare(model_a, tmp_path / "empty")
    unweighted = tmp_path / "unweighted"
    unweighted.mkdir()
    shutil.copy(model_a / "unet" / "config.json", unweighted)
    with pytest.raises(FileNotFoundError, match=f"{unweighted}: expected one weights file beside config.json"):
        compare.compare(unweighted, model_a)
    other = tmp_path / "other.safetensors"
    save_file({"something.weight": torch.ones(2, 2)}, other)
    with pytest.raises(ValueError, match=f"{other}: no UNet or VAE weights recognised"):
        compare.compare(other, model_a)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"{garbage}: not readable as plain tensors"):
        compare.compare(garbage, model_a)


def test_command_prints_the_table_and_writes_the_json(model_a: Path, model_b: Path, tmp_path: Path, capsys):
    parser = argparse.ArgumentParser(prog="cleanroom")
    compare.register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "report" / "similarity.json"
    args = parser.parse_args(["compare-weights", str(model_a), str(model_b), "--json", str(out)])
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert "### unet" in printed and "### vae" in printed and "| unet.down_blocks.0 |" in printed
    assert "1-D tensors (biases, norm scales and shifts) are shown apart" in printed
    saved = json.loads(out.read_text())
    assert [p.name for p in out.parent.iterdir()] == ["similarity.json"]  # no temp file left behind
    unet = saved["components"]["unet"]
    assert unet["summary"]["weights"]["params"] == sum(r["params"] for r in unet["tensors"] if not r["vector"])
    assert f"| **unet (all)** | **{unet['summary']['weights']['cosine']:.6f}** |" in printed
    assert all(-1 <= r["cosine"] <= 1 for r in unet["tensors"] if r["cosine"] is not None)
