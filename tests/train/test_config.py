from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from curate.config import ConfigError
from train import config as config_io

from trained import config_dict

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["train-tiny.yaml", "train-sd1.yaml"])
def test_shipped_configs_load(name):
    config = config_io.load(ROOT / "pipelines" / name)
    assert config.data.shards and Path(config.data.shards).is_absolute()


def test_tiny_config_is_the_demo_recipe():
    config = config_io.load(ROOT / "pipelines" / "train-tiny.yaml")
    assert config.data.shards == str(ROOT / "out" / "demo" / "shards")
    assert config.diffusion.conditioning.layer == "penultimate"
    assert config.data.caption_dropout == 0.1


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_errors_name_the_file_and_the_field(tmp_path: Path):
    data = config_dict("shards")
    data["diffusion"]["prediction"] = "x0"
    data["data"]["colour"] = "red"
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as error:
        config_io.load(path)
    message = str(error.value)
    assert str(path) in message and "diffusion.prediction" in message and "data.colour" in message


def test_missing_loop_and_bad_layer_for_image_encoder(tmp_path: Path):
    data = config_dict("shards")
    del data["autoencoder"]["loop"]
    data["diffusion"]["conditioning"] = {"encoder": "image", "layer": "penultimate"}
    with pytest.raises(ConfigError, match="autoencoder.loop: Field required.*layer applies to the text encoder"):
        config_io.load(write(tmp_path, data))


def test_relative_paths_are_relative_to_the_file_and_urls_stay(tmp_path: Path):
    data = config_dict("shards/{00000..00003}.tar", diffusion={"init": "../unet", "autoencoder": "vae"})
    data["diffusion"]["conditioning"] = {"model": "ViT-L-14", "pretrained": "clip.safetensors"}
    config = config_io.load(write(tmp_path, data))
    assert config.diffusion.conditioning.pretrained == str(tmp_path / "clip.safetensors")
    data["diffusion"]["conditioning"]["pretrained"] = "openai"
    assert config_io.load(write(tmp_path, data)).diffusion.conditioning.pretrained == "openai"
    assert config.data.shards == str(tmp_path / "shards" / "{00000..00003}.tar")
    assert config.diffusion.init == str(tmp_path.parent / "unet")
    assert config.diffusion.autoencoder == str(tmp_path / "vae")
    data["data"]["shards"] = "s3://bucket/shard-{00000..00009}.tar"
    assert config_io.load(write(tmp_path, data)).data.shards == "s3://bucket/shard-{00000..00009}.tar"


def test_command_line_shards_are_relative_to_the_working_directory(tmp_path: Path, monkeypatch):
    config = config_io.load(write(tmp_path, config_dict("shards")))
    monkeypatch.chdir(tmp_path.parent)
    assert config_io.with_shards(config, "elsewhere").data.shards == str(tmp_path.parent / "elsewhere")
    assert config_io.with_shards(config, None) is config


def test_dump_parse_round_trip_and_differences(tmp_path: Path):
    config = config_io.load(write(tmp_path, config_dict("shards")))
    again = config_io.parse(config_io.dump(config), "saved")
    assert config_io.differences(config, again) == []
    changed = again.model_copy(update={"seed": 1})
    assert config_io.differences(config, changed) == ["seed"]
