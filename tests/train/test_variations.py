"""Image variations: sampling a model conditioned on the open_clip image embedding, and its export to a
diffusers StableDiffusionImageVariationPipeline that draws the same images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from curate.cli import main
from train import export, generate
from train.config import ConditioningConfig
from train.generate import SampleSettings
from train.models import ConditioningEncoder


@pytest.fixture(scope="module")
def variations_folder(model_folder: Path, tmp_path_factory) -> Path:
    """The tiny trained model with its conditioning swapped for a (random, seeded) open_clip image tower: an
    image-variations model folder as `train diffusion` writes one (both towers give 32-wide states)."""
    folder = Path(shutil.copytree(model_folder, tmp_path_factory.mktemp("variations") / "final"))
    torch.manual_seed(3)
    shutil.rmtree(folder / "conditioning")
    ConditioningEncoder(ConditioningConfig(encoder="image", model="cleanroom-tiny-text")).save(folder / "conditioning")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["diffusion"]["conditioning"] = {"encoder": "image", "model": "cleanroom-tiny-text", "layer": "last"}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.fixture(scope="module")
def model(variations_folder: Path) -> generate.Model:
    return generate.load(variations_folder)


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> list[Path]:
    """Two reference images of other sizes and aspects than the tower's 32x32 input."""
    folder = tmp_path_factory.mktemp("references")
    rng = np.random.default_rng(5)
    paths = []
    for name, (height, width) in (("stripes.png", (40, 70)), ("noise.jpg", (64, 48))):
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        if name == "stripes.png":
            pixels[:, ::8] = 255
        Image.fromarray(pixels).save(folder / name)
        paths.append(folder / name)
    return paths


@pytest.fixture(scope="module")
def exported(variations_folder: Path, tmp_path_factory) -> dict:
    return export.export(variations_folder, tmp_path_factory.mktemp("export") / "variations")


def pixels(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.float32) for image in images])


def test_a_variation_depends_on_its_reference_and_its_seed(model, references):
    settings = SampleSettings(sampler="euler-a", steps=3, cfg_scale=4.0, seed=5)
    images = [generate.read_image(p) for p in references]
    states = generate.image_states(model.encoder, images)
    assert states.shape == (2, 1, 32) and (states[0] - states[1]).abs().max() > 0.1
    together = pixels(generate.generate_variations(model, images, settings))
    alone = pixels(generate.generate_variations(model, images[1:], settings, first_seed=6, batch_size=1))
    assert together.shape == (2, 32, 32, 3)
    assert np.abs(together[1] - alone[0]).max() <= 2  # its own seed, whatever batch it was drawn in
    # The 4-step UNet barely listens to its conditioning, so another reference changes a level or so only.
    same_seed = pixels(generate.generate_variations(model, images[1:], settings, first_seed=5))
    assert np.abs(together[0] - same_seed[0]).max() > 0
    other_seed = pixels(generate.generate_variations(model, images[:1], settings, first_seed=99))
    assert np.abs(together[0] - other_seed[0]).max() > 20


def test_sample_command_draws_variations_with_their_settings(variations_folder, references, tmp_path):
    out = tmp_path / "samples"
    assert main(["sample", str(variations_folder), "--image", str(references[0]), "--image", str(references[1]),
                 "--out", str(out), "--steps", "2", "--seed", "9", "--images-per-prompt", "2"]) == 0
    files = sorted(out.glob("0*.png"))
    assert [f.name for f in files] == ["00000-9.png", "00001-10.png", "00002-11.png", "00003-12.png"]
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [(Path(r["image"]).name, r["seed"]) for r in rows] == [
        ("stripes.png", 9), ("stripes.png", 10), ("noise.jpg", 11), ("noise.jpg", 12)]
    fields = generate.read_infotext(files[2])
    assert fields["Seed"] == "11" and fields["Steps"] == "2" and fields["Size"] == "32x32"
    assert json.loads((out / "grid.json").read_text())["labels"][0] == "variation of stripes.png (seed 9)"


def test_sample_command_refuses_the_wrong_input_in_one_line(variations_folder, model_folder, references, tmp_path,
                                                             capsys):
    cases = [
        (["sample", str(variations_folder), "--prompt", "a red square"], "conditioned on images"),
        (["sample", str(model_folder), "--image", str(references[0])], "conditioned on text prompts"),
        (["sample", str(variations_folder), "--image", str(references[0]), "--negative-prompt", "blurry"],
         "a negative prompt applies to text-conditioned models"),
        (["sample", str(variations_folder), "--image", str(references[0]), "--prompt", "x"], "exactly one of them"),
        (["sample", str(variations_folder), "--image", str(tmp_path / "missing.png")], "missing.png: no such image"),
    ]
    (tmp_path / "notes.png").write_text("not an image")
    cases.append((["sample", str(variations_folder), "--image", str(tmp_path / "notes.png")], "not an image"))
    for argv, message in cases:
        assert main([*argv, "--out", str(tmp_path / "o"), "--steps", "1"]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err and message in err[-1] and err[-1].startswith("cleanroom: error: "), (argv, err)
    assert not list(tmp_path.glob("o/*.png"))


def test_export_writes_an_image_variation_pipeline(exported: dict):
    folder = Path(exported["pipeline"])
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionImageVariationPipeline"
    assert index["image_encoder"] == ["transformers", "CLIPVisionModelWithProjection"]
    assert index["feature_extractor"] == ["transformers", "CLIPImageProcessor"]
    assert index["safety_checker"] == [None, None] and "text_encoder" not in index
    assert exported["image_encoder_layers"] == 1


def test_image_encoder_gives_the_conditioning_embedding(exported: dict, model, references):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    folder = Path(exported["pipeline"])
    processor = CLIPImageProcessor.from_pretrained(folder / "feature_extractor")
    encoder = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder", local_files_only=True)
    images = [generate.read_image(p) for p in references]
    with torch.no_grad():
        theirs = encoder(processor(images=images, return_tensors="pt").pixel_values).image_embeds
    torch.testing.assert_close(theirs.unsqueeze(1), generate.image_states(model.encoder, images), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,karras", [("euler-a", False), ("dpmpp-2m", True)])
def test_exported_pipeline_and_our_sampler_draw_the_same_variation(exported: dict, model, references, name, karras):
    from diffusers import StableDiffusionImageVariationPipeline

    from train import sample

    settings = SampleSettings(sampler=name, karras=karras, steps=6, cfg_scale=6.0, width=48, height=32, seed=11)
    images = [generate.read_image(p) for p in references]
    ours = pixels(generate.generate_variations(model, images, settings))
    pipe = StableDiffusionImageVariationPipeline.from_pretrained(exported["pipeline"], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = sample.make_scheduler(pipe.scheduler.config, name, karras)
    theirs = pipe(images, num_inference_steps=6, guidance_scale=6.0, width=48, height=32,
                  generator=[torch.Generator().manual_seed(s) for s in (11, 12)], output_type="np").images * 255
    assert np.abs(ours - theirs).max() <= 1.0  # rounding to 8 bits only
    assert ours.std() > 0


def test_single_file_holds_the_image_tower_and_says_so_in_its_yaml(exported: dict, model):
    from safetensors import safe_open

    with safe_open(exported["single_file"], "pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
    tower = {f"cond_stage_model.model.visual.{k}" for k in model.encoder.clip.visual.state_dict()}
    assert "cond_stage_model.model.visual.proj" in tower and tower == {k for k in keys if k.startswith("cond_")}
    assert metadata["cleanroom.conditioning"] == "open_clip cleanroom-tiny-text, image embedding"
    config = yaml.safe_load(Path(exported["original_config"]).read_text())["model"]["params"]
    assert config["cond_stage_config"]["target"] == "ldm.modules.encoders.modules.FrozenOpenCLIPImageEmbedder"
    assert config["cond_stage_key"] == "jpg" and config["unet_config"]["params"]["context_dim"] == 32


def _layer_scale(encoder: ConditioningEncoder) -> None:
    from open_clip.transformer import LayerScale

    encoder.clip.visual.transformer.resblocks[0].ls_2 = LayerScale(32)


UNSUPPORTED = {
    "'avg' pooling": lambda e: setattr(e.clip.visual, "pool_type", "avg"),
    "LayerScale": _layer_scale,
    "a ModifiedResNet": lambda e: setattr(e.clip, "visual", type("ModifiedResNet", (nn.Module,), {})()),
    "extra weights .*head_bias": lambda e: e.clip.visual.register_parameter("head_bias", nn.Parameter(torch.zeros(2))),
}


@pytest.mark.parametrize("feature", UNSUPPORTED)
def test_unsupported_image_towers_are_refused_naming_the_feature(feature: str):
    encoder = ConditioningEncoder(ConditioningConfig(encoder="image", model="cleanroom-tiny-text"))
    UNSUPPORTED[feature](encoder)
    with pytest.raises(export.ExportError, match=f"open_clip model 'cleanroom-tiny-text': its image tower has "
                                                 f".*{feature}.*CLIPVisionModelWithProjection"):
        export.image_encoder(encoder)
