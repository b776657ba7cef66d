"""The demo pipeline on a Ray cluster made on this machine: two nodes, and a job submitted to a head.

Both are slow (a demo run each) and run with ``make test-slow``. The cluster is local, so the
nodes share this machine's filesystem, as they must share OUT on a real cluster (docs/cluster.md).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "pipelines" / "demo.yaml"
RAY = Path(sys.executable).parent / "ray"


def fates(out: Path) -> dict[str, tuple[str, str]]:
    return {r["key"]: (r["status"], r["reason"]) for r in pq.read_table(RunFolder(out).records).to_pylist()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(2400)  # two demo runs: the local reference (demo_out) and the cluster's
def test_the_demo_on_two_nodes_decides_every_record_as_a_local_run_does(tmp_path, demo_out):
    import ray
    from ray.cluster_utils import Cluster

    from curate.run import run

    node = {"num_cpus": 1, "object_store_memory": 300 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    cluster.wait_for_nodes()
    try:
        stats = run(DEMO, tmp_path / "out", address=cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert RunFolder(tmp_path / "out").config().mode == "cluster"
    assert fates(tmp_path / "out") == fates(demo_out)
    assert stats["kept"] == RunFolder(demo_out).stats()["kept"]


def wait_for_port(port: int, head: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray start --head exited with {head.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(1)
    pytest.fail(f"the head's dashboard did not listen on port {port} within {seconds} s")


def stop(head: subprocess.Popen) -> None:
    """The head and every process it started (its process group): SIGTERM, then SIGKILL."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
    except ProcessLookupError:
        pass


def submit_when_the_job_agent_is_up(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``ray job submit``, asked again while the head's job agent is still starting (nothing was submitted)."""
    for _ in range(30):
        submitted = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
        if "No available agent to submit job" not in submitted.stderr + submitted.stdout:
            return submitted
        time.sleep(5)
    return submitted


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_run_submitted_as_a_ray_job_finishes(tmp_path):
    if not RAY.exists():
        pytest.fail(f"{RAY} is missing: install the cluster extra (pip install -c constraints.txt '.[cluster]')")
    # Ray's socket paths live under its temp folder and may not exceed 107 bytes: pytest's tmp_path is too deep.
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    # Ray's token authentication, as a real head should run: the head and the job CLI share the token.
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port, dashboard = free_port(), free_port()
    # --block keeps the head in this process group, so the test stops its own head only: `ray stop`
    # would stop every Ray on the machine, another user's runs included.
    head = subprocess.Popen([str(RAY), "start", "--head", "--block", "--num-cpus", "2", "--port", str(port),
                             "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1", "--dashboard-port",
                             str(dashboard), "--temp-dir", str(ray_tmp), "--disable-usage-stats"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "out"
    try:
        wait_for_port(dashboard, head)
        submitted = submit_when_the_job_agent_is_up(
            [str(RAY), "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir", str(ROOT),
             "--", str(Path(sys.executable).parent / "cleanroom"), "curate", "run", "demo", "--out", str(out)], env)
    finally:
        stop(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    assert "succeeded" in submitted.stdout
    folder = RunFolder(out)
    assert folder.done and folder.config().mode == "cluster"
    assert folder.stats()["kept"] > 0
