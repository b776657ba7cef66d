"""Help and config loading stay light: none of torch, Ray or img2dataset (seconds each) is imported."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "ray", "img2dataset"}


def imported(*args: str) -> set[str]:
    """Top-level names of the modules ``python -X importtime ARGS`` imports (in a fresh process)."""
    result = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines}


@pytest.mark.parametrize("command", [["--help"], ["curate", "run", "--help"], ["train", "diffusion", "--help"],
                                     ["optin", "submit", "--help"]])
def test_cleanroom_help_imports_no_heavy_module(command):
    modules = imported("-m", "curate.cli", *command)
    assert {"curate", "train", "audit"} <= modules  # every package's commands are listed, none of them loaded
    assert not modules & HEAVY


def test_loading_and_resolving_a_pipeline_imports_no_heavy_module(tmp_path):
    code = ("from pathlib import Path\n"
            "from curate.config import load_pipeline, resolve\n"
            "path = Path('pipelines/demo.yaml')\n"
            "load_pipeline(path)\n"
            f"resolve(path, {{'out': {str(tmp_path)!r}, 'demo_url': 'http://x/', 'demo_models': '/m'}})\n")
    modules = imported("-c", code)
    assert "curate" in modules
    assert not modules & HEAVY
