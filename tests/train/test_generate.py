"""`cleanroom sample`: every sampler, seeds per image, settings in each PNG, clear refusals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curate.cli import main
from train import generate
from train.config import ConditioningConfig
from train.generate import SampleSettings
from train.models import ConditioningEncoder


@pytest.fixture(scope="module")
def model(model_folder: Path) -> generate.Model:
    return generate.load(model_folder)


def pixels(images) -> list[np.ndarray]:
    return [np.asarray(image, dtype=np.int16) for image in images]


@pytest.mark.parametrize("name,karras", [("ddim", False), ("euler", True), ("euler-a", False), ("dpmpp-2m", False),
                                         ("dpmpp-2m", True), ("pndm", False), ("lms", False), ("lms", True)])
def test_every_sampler_draws_images_of_the_asked_size(model, name, karras):
    settings = SampleSettings(sampler=name, karras=karras, steps=4, width=48, height=32)
    images = generate.generate(model, ["a red square", "blue"], settings)
    assert [image.size for image in images] == [(48, 32), (48, 32)]
    assert all(np.asarray(image).std() > 0 for image in images)


@pytest.mark.parametrize("name", ["euler-a", "dpmpp-2m"])
def test_an_image_depends_on_its_seed_not_on_its_batch(model, name):
    """Ancestral samplers draw fresh noise every step: it must come from the image's own seed too."""
    settings = SampleSettings(sampler=name, steps=4, seed=7)
    prompts = ["one", "two", "three"]
    alone = pixels(generate.generate(model, prompts, settings, batch_size=1))
    together = pixels(generate.generate(model, prompts, settings, batch_size=3))
    # Kernels may sum in another order for another batch size: a level or two, not another image.
    assert all(np.abs(a - b).max() <= 2 for a, b in zip(alone, together))
    shifted = pixels(generate.generate(model, prompts[1:], settings, first_seed=8))
    assert all(np.abs(a - b).max() <= 2 for a, b in zip(alone[1:], shifted))
    other_seed = pixels(generate.generate(model, ["one"], settings, first_seed=99))[0]
    assert np.abs(alone[0] - other_seed).max() > 20


def test_guidance_and_negative_prompt_change_the_image(model):
    base = SampleSettings(sampler="ddim", steps=4, cfg_scale=5.0)
    plain = pixels(generate.generate(model, ["a red square"], base))[0]
    negative = pixels(generate.generate(model, ["a red square"],
                                        base.model_copy(update={"negative_prompt": "green"})))[0]
    unguided = pixels(generate.generate(model, ["a red square"], base.model_copy(update={"cfg_scale": 1.0})))[0]
    assert not np.array_equal(plain, negative) and not np.array_equal(plain, unguided)


def test_pngs_carry_their_settings_in_the_usual_form(model_folder, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# the comment is skipped\na red square\n\nblue\n")
    out = tmp_path / "samples"
    assert main(["sample", str(model_folder.parent.parent), "--prompts", str(prompts), "--out", str(out),
                 "--sampler", "dpmpp-2m", "--karras", "--steps", "3", "--cfg-scale", "11", "--seed", "41",
                 "--negative-prompt", "blurry", "--images-per-prompt", "2"]) == 0
    files = sorted(out.glob("0*.png"))
    assert [f.name for f in files] == ["00000-41.png", "00001-42.png", "00002-43.png", "00003-44.png"]
    first = generate.read_infotext(files[0])
    assert first["prompt"] == "a red square" and first["negative prompt"] == "blurry"
    text = Image.open(files[2]).text["parameters"]
    assert text.startswith("blue\nNegative prompt: blurry\nSteps: 3, Sampler: DPM++ 2M Karras, CFG scale: 11.0, "
                           "Seed: 43, Size: 32x32, Model hash: ")
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["seed"]) for r in rows] == [("a red square", 41), ("a red square", 42), ("blue", 43),
                                                        ("blue", 44)]
    assert [r["file"] for r in rows] == [f.name for f in files]  # what audit tools read the samples by
    assert json.loads((out / "settings.json").read_text())["cfg_scale"] == 11.0
    assert (out / "grid.png").is_file() and not list(out.glob("*.tmp"))


def test_refusals_name_what_to_change(model, model_folder, tmp_path, capsys):
    with pytest.raises(ValueError, match="has no Karras sigmas"):
        SampleSettings(sampler="ddim", karras=True)
    with pytest.raises(ValueError, match="unknown sampler 'heun'; known: ddim, euler"):
        SampleSettings(sampler="heun")
    with pytest.raises(ValueError, match="size 36x32: width and height must be multiples of 8"):
        generate.generate(model, ["x"], SampleSettings(width=36))
    image_model = dataclasses.replace(model, encoder=ConditioningEncoder(ConditioningConfig(encoder="image")))
    with pytest.raises(ValueError, match="conditioned on images"):
        generate.generate(image_model, ["x"], SampleSettings())
    assert main(["sample", str(tmp_path), "--prompt", "x", "--out", str(tmp_path / "o")]) == 2
    assert "not a model folder" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("# nothing\n")
    assert main(["sample", str(model_folder), "--prompts", str(tmp_path / "empty.txt"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "no prompts" in capsys.readouterr().err


@pytest.mark.parametrize("text, prompt, negative, seed", [
    ("a study of colour\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 3",
     "a study of colour", "blurry", "3"),
    ("two\nlines\nSteps: 4, Seed: -1, Size: 32x32", "two\nlines", "", "-1"),
    ("only a prompt", "only a prompt", "", None),
    ("Steps: 20, Sampler: Euler, Seed: 12", "", "", "12"),
    (None, "", "", None),
])
def test_parameters_text_reads_back_as_fields(text, prompt, negative, seed):
    fields = generate.parse_infotext(text)
    assert (fields["prompt"], fields["negative prompt"], fields.get("Seed")) == (prompt, negative, seed)
