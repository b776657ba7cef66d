"""``cleanroom optin submit|revoke`` through the argument parser the lead wires in."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from curate.localserve import serve
from curate.optin.cli import add_commands
from curate.optin.store import Store

from .conftest import picture
from .runs import build_run, members, museum_rows, optin_rows

CONSENT = {"consent": "consent-v1", "accepted": True, "accepted_on": "2026-11-20", "display_name": "Ann Example",
           "contact": "ann@example.org", "scope": {"training": True, "model_release": True, "credit": True},
           "evidence": "signed form, ticket 7"}


def cleanroom(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="cleanroom")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_submit_then_revoke_by_contact_cleans_the_run(tmp_path, capsys):
    folder = tmp_path / "from-ann"
    folder.mkdir()
    (folder / "consent.yaml").write_text(yaml.safe_dump(CONSENT))
    (folder / "a.jpg").write_bytes(picture(1))
    (folder / "notes.jpg").write_text("<html></html>")
    store_dir = tmp_path / "optin"
    assert cleanroom("optin", "submit", str(folder), "--store", str(store_dir)) == 1  # one file refused
    report = json.loads(capsys.readouterr().out)
    assert [a["item"] for a in report["accepted"]] == ["a.jpg"]
    assert [r["code"] for r in report["refused"]] == ["not_an_image"]

    store = Store(store_dir)
    museum, museum_images = museum_rows(1)
    optin, optin_images = optin_rows(store)
    out = tmp_path / "run"
    build_run(out, store, {"shard-00000": [optin[0]["key"], museum[0]["key"]]}, museum + optin,
              {**museum_images, **optin_images})
    assert cleanroom("optin", "revoke", "--contact", "ANN@example.org", "--store", str(store_dir),
                     "--run", str(out)) == 2  # no evidence given
    assert "--evidence" in capsys.readouterr().err
    assert cleanroom("optin", "revoke", "--contact", "ANN@example.org", "--store", str(store_dir),
                     "--evidence", "e-mail of 2026-11-21", "--run", str(out)) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["runs"][0]["samples_removed"] == 1
    assert set(members(out / "shards")) == {museum[0]["key"]}
    assert cleanroom("optin", "revoke", "--store", str(store_dir), "--run", str(out)) == 0  # nothing left to do
    assert json.loads(capsys.readouterr().out)[0]["samples_removed"] == 0


def test_errors_name_what_is_missing(tmp_path, capsys):
    assert cleanroom("optin", "revoke", "ctb-nobody", "--store", str(tmp_path / "none"), "--evidence", "x") == 2
    assert "not an opt-in store" in capsys.readouterr().err
    assert cleanroom("optin", "submit", str(tmp_path)) == 2
    assert "--store" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cleanroom("optin", "revoke", "ctb-x", "--contact", "a@b.org", "--store", str(tmp_path))


def test_serve_answers_on_loopback(tmp_path):
    port = _free_port()
    # setdefault: a no-op once the lead registers the adapter in curate.sources.ADAPTERS.
    script = ("import argparse, sys\nfrom curate.optin.cli import add_commands\n"
              "from curate.sources import ADAPTERS\nADAPTERS.setdefault('optin', 'curate.sources.optin')\n"
              "p = argparse.ArgumentParser()\nadd_commands(p.add_subparsers(dest='command'))\n"
              "a = p.parse_args(sys.argv[1:])\nsys.exit(a.handler(a))\n")
    server = subprocess.Popen([sys.executable, "-c", script, "optin", "serve", "--store", str(tmp_path / "optin"),
                               "--port", str(port), "--insecure-cookies"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        page = _get_when_up(f"http://127.0.0.1:{port}/", server)
        assert "Register" in page and (tmp_path / "optin" / "registry.sqlite").exists()
    finally:
        server.terminate()
        server.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_when_up(url: str, server: subprocess.Popen) -> str:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.read().decode()
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not come up: {server.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.2)


def test_a_pipeline_allows_a_url_host_by_name(tmp_path, capsys):
    site = tmp_path / "site"
    site.mkdir()
    (site / "photo.jpg").write_bytes(picture(2))
    folder = tmp_path / "from-ann"
    folder.mkdir()
    (folder / "consent.yaml").write_text(yaml.safe_dump(CONSENT))
    store_dir = tmp_path / "optin"
    pipeline = tmp_path / "intranet.yaml"
    with serve(site) as base:
        pipeline.write_text(yaml.safe_dump({"name": "intranet", "sources": [
            {"manifest": "optin", "metadata": [str(store_dir)], "options": {"allow_hosts": [base.rstrip("/")]}}]}))
        (folder / "metadata.jsonl").write_text(json.dumps({"url": f"{base}photo.jpg", "caption": "Intranet"}) + "\n")
        assert cleanroom("optin", "submit", str(folder), "--store", str(store_dir)) == 1
        assert [r["code"] for r in json.loads(capsys.readouterr().out)["refused"]] == ["url_not_allowed"]
        assert cleanroom("optin", "submit", str(folder), "--pipeline", str(pipeline)) == 0
    assert [s.caption for s in Store(store_dir).submissions()] == ["Intranet"]
