"""The command line's options: every one shows its default and its choices in --help, and a value that a
settings model refuses is one line naming the option as typed, the value and the constraint, with exit 2."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from curate import cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "pipelines" / "train-tiny.yaml"


def commands() -> list[str]:
    top = cli.parser()
    return [name for action in top._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices]


def walk(parser: argparse.ArgumentParser, path: str):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, f"{path} {name}")


def every_parser():
    """(command line, parser) for every command and subcommand; a lazy command gets its arguments when chosen."""
    for command in commands():
        top = cli.parser(command)
        sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
        yield from walk(sub, f"cleanroom {command}")


def entry(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The action's entry in ``parser``'s help, on one line."""
    formatter = parser._get_formatter()
    formatter.add_argument(action)
    return " ".join(formatter.format_help().split())


def test_every_option_shows_its_default_and_its_choices():
    checked = set()
    for path, parser in every_parser():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.default == argparse.SUPPRESS:
                continue
            shown, where = entry(parser, action), f"{path} {(action.option_strings or [action.dest])[0]}"
            if cli.says_default(action):
                default = "empty" if action.default == "" else str(action.default)
                assert "default" in shown and default in shown, f"{where}: {shown}"
                assert shown.count("default") == 1, f"{where}: said twice in {shown}"
                checked.add(where)
            for choice in action.choices or ():
                assert str(choice) in shown, f"{where}: {choice} not in {shown}"
    # The walk reached the commands whose arguments are defined only when chosen, and the nested ones.
    assert {"cleanroom sample --steps", "cleanroom train cache --variants", "cleanroom optin serve --port"} <= checked


def test_an_option_without_help_text_still_shows_its_default(capsys):
    parser = cli.Parser(prog="demo")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--label", default="")
    parser.add_argument("--quiet", action="store_true")
    text = " ".join(parser.format_help().split())
    assert "--port PORT (default: 8000)" in text and "--label LABEL (default: empty)" in text
    assert "--quiet (default" not in text  # an unset flag says nothing


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def sample_argv(tmp_path: Path, *options: str) -> list[str]:
    return ["sample", str(tmp_path / "model"), "--prompt", "a cat", "--out", str(tmp_path / "o"), *options]


@pytest.mark.parametrize(("options", "message"), [
    (("--steps", "-1"), "--steps -1: Input should be greater than or equal to 1"),
    (("--cfg-scale", "0.5"), "--cfg-scale 0.5: Input should be greater than or equal to 1"),
    (("--width", "4"), "--width 4: Input should be greater than or equal to 8"),
    (("--sampler", "DDIM", "--karras"), "--sampler ddim: sampler 'ddim' has no Karras sigmas"),
    (("--steps", "0", "--seed", "-3"), "--steps 0: Input should be greater than or equal to 1; "
                                       "--seed -3: Input should be greater than or equal to 0"),
])
def test_sampling_values_the_settings_refuse_name_the_option(tmp_path, capsys, options, message):
    assert cli.main(sample_argv(tmp_path, *options)) == 2
    assert one_line(capsys.readouterr().err) == f"cleanroom: error: {message}"
    assert not (tmp_path / "o").exists()  # refused before the model is loaded or anything written


@pytest.mark.parametrize(("options", "message"), [
    (("--variants", "0"), "--variants 0: Input should be greater than or equal to 1"),
    (("--batch-size", "-2", "--variants", "0"), "--variants 0: Input should be greater than or equal to 1; "
                                                "--batch-size -2: Input should be greater than or equal to 1"),
])
def test_cache_values_the_job_refuses_name_the_option(tmp_path, capsys, options, message):
    argv = ["train", "cache", str(tmp_path / "shards"), "--config", str(TINY), "--autoencoder", str(tmp_path / "a"),
            "--out", str(tmp_path / "cache"), *options]
    assert cli.main(argv) == 2
    assert one_line(capsys.readouterr().err) == f"cleanroom: error: {message}"
    assert not (tmp_path / "cache").exists()


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(default=1, ge=1)
    name: str = "x"


def test_a_value_with_spaces_is_quoted_as_it_would_be_typed():
    with pytest.raises(cli.OptionError, match=r"^--steps 'two steps': Input should be a valid integer"):
        cli.from_options(Settings, {"steps": "two steps"}, {"steps": "--steps"})


def test_an_error_about_a_field_no_option_sets_keeps_its_traceback():
    with pytest.raises(ValidationError):  # a bug: the command passed a field it has no option for
        cli.from_options(Settings, {"steps": 2, "name": 3}, {"steps": "--steps"})


def test_a_validation_error_from_deeper_inside_is_not_turned_into_one_line(tmp_path, monkeypatch):
    from train import generate

    def broken_load(*args, **kwargs):
        return Settings(steps=0)  # a ValidationError no option caused

    monkeypatch.setattr(generate, "load", broken_load)
    with pytest.raises(ValidationError, match="steps"):
        cli.main(sample_argv(tmp_path))
