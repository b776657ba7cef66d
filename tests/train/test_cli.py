from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from curate.cli import main
from train import cli

from trained import config_dict


def test_add_commands_hangs_train_jobs_on_a_parser():
    parser = argparse.ArgumentParser(prog="cleanroom")
    cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", "diffusion", "c.yaml", "--shards", "s/{0..1}.tar", "--out", "o", "--resume"])
    assert (args.command, args.job, args.config, args.shards, args.out, args.resume) == (
        "train", "diffusion", "c.yaml", "s/{0..1}.tar", "o", True)
    assert args.handler is not None


def test_train_autoencoder_from_the_command_line(shards: Path, tmp_path: Path, capsys):
    config = config_dict("not-there")
    config["autoencoder"]["loop"] = {"steps": 2, "checkpoint_every": 2, "validate_every": 2}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = ["train", "autoencoder", str(path), "--shards", str(shards), "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["step"] == 2 and printed["final"] == str(tmp_path / "out" / "autoencoder" / "final")
    assert main(argv) == 2  # checkpoints exist: needs --resume
    assert "pass --resume" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0


def test_config_errors_exit_2_with_the_file_named(tmp_path: Path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\n")
    assert main(["train", "autoencoder", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "autoencoder: Field required" in err


@pytest.mark.parametrize("option", ["--images-per-prompt", "--batch-size"])
def test_sampling_counts_below_one_are_refused_naming_the_option(option: str, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["sample", str(tmp_path), "--prompt", "a red square", "--out", str(tmp_path / "out"), option, "0"])
    assert exit_.value.code == 2 and f"argument {option}: 0: at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
