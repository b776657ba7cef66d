"""The command line answers in one line: an expected error names the file, field or option (with the
choices where there are choices) and exits 2; a bug keeps its traceback."""

from __future__ import annotations

import json

import pytest

from curate import cli, report
from curate.report import page


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def parse_error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        cli.main(list(argv))
    assert stopped.value.code == 2
    return one_line(capsys.readouterr().err)


def test_a_bad_option_value_names_the_option_and_its_choices(capsys, tmp_path):
    line = parse_error(capsys, "train", "cache", str(tmp_path), "--config", "c.yaml", "--autoencoder", "a",
                       "--out", "o", "--precision", "fp8")
    assert "--precision" in line and "'fp8'" in line and "fp16" in line and "fp32" in line
    assert "--out" in parse_error(capsys, "curate", "run", "demo")  # a required option left out


def test_an_unknown_sampler_lists_the_samplers(capsys, tmp_path):
    line = parse_error(capsys, "sample", str(tmp_path), "--prompt", "a cat", "--out", str(tmp_path / "o"),
                       "--sampler", "foo")
    assert line.startswith("cleanroom sample: error: argument --sampler: invalid choice: 'foo'")
    assert all(name in line for name in ("ddim", "euler-a", "dpmpp-2m", "pndm", "lms"))


def test_bad_sql_is_one_line_from_duckdb(credited_run, capsys):
    out = str(credited_run["out"])
    assert cli.main(["query", out, "SELEC key FROM records"]) == 2
    assert one_line(capsys.readouterr().err) == ('cleanroom: error: query: Parser Error: syntax error at or near '
                                                 '"SELEC"')
    assert cli.main(["query", out, "SELECT * FROM recrods"]) == 2
    assert "Table with name recrods does not exist" in one_line(capsys.readouterr().err)
    assert cli.main(["query", out, "SELECT count(*) AS n FROM records"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "9"]  # six museum records, three contributions


def test_a_pipeline_that_does_not_validate_stops_before_out_is_made(tmp_path, capsys):
    pipeline = tmp_path / "bad.yaml"
    pipeline.write_text("name: bad\nsources: [{manifest: met}]\nfiltres: {resolution: {}}\n")
    out = tmp_path / "out"
    assert cli.main(["curate", "run", str(pipeline), "--out", str(out)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(pipeline) in line and "filtres: Extra inputs are not permitted" in line
    assert not out.exists()


def test_a_bug_keeps_its_traceback(credited_run, monkeypatch):
    def broken(out):
        return int("not a number")  # a ValueError no one raised for the user

    monkeypatch.setattr(report, "write", broken)
    with pytest.raises(ValueError, match="invalid literal"):
        cli.main(["report", str(credited_run["out"])])


def test_report_command_writes_the_reports_of_a_run(credited_run, capsys, tmp_path):
    assert cli.main(["report", str(credited_run["out"])]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["report"] == str(credited_run["out"] / report.FOLDER / page.INDEX)
    assert all(open(path, "rb").read(1) for path in written.values())
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty")]) == 2
    assert f"{tmp_path / 'empty' / 'catalog.duckdb'}: no catalog" in one_line(capsys.readouterr().err)


def test_version(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.startswith("cleanroom 0.")
