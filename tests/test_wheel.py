"""The wheel alone is a working install: built offline from a copy of the checkout, installed into a fresh
virtual environment, and run from a folder that is not the checkout."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curate", "train", "audit")
BUILT_FROM = ("pyproject.toml", "setup.py", "README.md", *PACKAGES, "licenses", "manifests", "pipelines")
DATA_FOLDERS = ("licenses", "manifests", "pipelines")
PTH = "cleanroom_torchvision_cpu.pth"


def run(*command, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # A copy, because building in place leaves build/ and egg-info in the checkout.
    source = tmp_path_factory.mktemp("source")
    for name in BUILT_FROM:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    # --no-build-isolation: this environment's setuptools, so no index is needed.
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "--wheel-dir", dist, source, cwd=dist)
    (built,) = dist.glob("cleanroom-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--without-pip", root, cwd=root)
    python = root / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root).stdout.strip())
    # The dependencies are this environment's, added as a path only: its .pth files (the checkout's editable
    # finder among them) do not run there, so curate can come from nowhere but the wheel.
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel,
        cwd=root)
    return root


def test_the_wheel_holds_every_module_every_data_file_and_the_pth_at_its_top(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in DATA_FOLDERS:
        files = [p for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        assert files
        for path in files:
            assert f"curate/data/{folder}/{path.relative_to(ROOT / folder).as_posix()}" in names
    for package in PACKAGES:
        modules = [p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts]
        assert modules
        for path in modules:
            assert path.relative_to(ROOT).as_posix() in names
    assert PTH in names
    assert zipfile.ZipFile(wheel).read(PTH).decode() == "import curate._torchvision_cpu\n"


def test_the_installed_package_reads_its_own_data_from_any_folder(venv: Path, tmp_path: Path):
    code = ("import sys\n"
            "hooked = 'curate._torchvision_cpu' in sys.modules\n"  # imported by the .pth at start, or not at all
            "import json, curate\n"
            "from curate import config, data\n"
            "pipeline = config.pipeline_path('demo')\n"
            f"resolved = config.resolve(pipeline, {{'out': {str(tmp_path)!r}, 'demo_url': 'http://x/', "
            "'demo_models': '/m'})\n"
            "print(json.dumps({'hooked': hooked, 'curate': curate.__file__, 'pipeline': str(pipeline),\n"
            "                  'policy': resolved.policy_file, 'sources': [s.source for s in resolved.sources],\n"
            "                  'data': [str(data.LICENSES), str(data.MANIFESTS), str(data.PIPELINES)]}))\n")
    found = json.loads(run(venv / "bin" / "python", "-c", code, cwd=tmp_path).stdout)
    assert found["hooked"]
    for path in (found["curate"], found["pipeline"], found["policy"], *found["data"]):
        assert Path(path).is_relative_to(venv), path
    assert Path(found["pipeline"]).name == "demo.yaml" and Path(found["policy"]).name == "policy-default.yaml"
    assert found["sources"] == ["met", "commons", "local"]


def test_cleanroom_help_runs_in_the_installed_environment(venv: Path, tmp_path: Path):
    printed = run(venv / "bin" / "cleanroom", "--help", cwd=tmp_path).stdout
    assert "curate" in printed and "memorization" in printed


@pytest.mark.slow
def test_the_demo_runs_from_the_wheel(venv: Path, tmp_path: Path):
    out = tmp_path / "out"
    printed = run(venv / "bin" / "cleanroom", "curate", "run", "demo", "--out", out, cwd=tmp_path, timeout=900).stdout
    summary = json.loads(printed[printed.index("{"):])
    assert summary["kept"] > 0
    assert (out / "DONE").is_file()
