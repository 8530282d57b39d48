"""``bertops cluster down`` (``make demo-down``) stops the local runtime's processes
recorded under the cluster's folder (the demo's operator keeps its state dir there), as
the operator would: by pid + start time, SIGTERM then SIGKILL, the whole session (a
server that ignores SIGTERM outlives its bash wrapper), and never a stranger's pid."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bertops.operator.deployment.processes import ServingProcess
from bertops.operator.runtime.local import process_start_time, recorded_alive, session_members

# A model server that will not stop on SIGTERM (only SIGKILL ends it).
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def test_cluster_down_stops_recorded_steps_and_serving(tmp_path: Path) -> None:
    cluster_dir = tmp_path / "clusters" / "demo-t"
    state = cluster_dir / "demo" / "state"
    server = ServingProcess(state / "serving" / "default" / "sentiment" / "gateway")
    step = ServingProcess(state / "steps" / "default" / "sentiment-train-g1-a1-abc")
    server.start([sys.executable, "-c", STUBBORN], {})
    step.start(["sleep", "600"], {})
    stranger = state / "serving" / "default" / "other" / "web-m1"
    stranger.mkdir(parents=True)
    # A live pid recorded with another start time: a reused pid, never to be signalled.
    (stranger / "pid").write_text(f"{os.getpid()} 1")
    pids = [p for folder in (server, step) for p in wait_members(folder)]
    assert len(pids) >= 4, pids  # each: the bash wrapper and its child
    assert recorded_alive(cluster_dir) == sorted([server.folder, step.folder])

    down = cluster_down(tmp_path, "demo-t")

    assert down.returncode == 0, down.stderr
    assert not server.alive() and not step.alive()  # also reaps them (no warning later)
    assert [p for p in pids if process_start_time(p) is not None] == []
    assert recorded_alive(cluster_dir) == []
    assert "stopped demo/state/serving/default/sentiment/gateway" in down.stderr + down.stdout
    assert "other" not in down.stderr + down.stdout


def cluster_down(home: Path, name: str) -> subprocess.CompletedProcess[str]:
    """``bertops cluster down --name NAME`` as a user runs it, with BERTOPS_HOME=home;
    its exit code is for the caller to assert, with stderr."""
    return subprocess.run(
        [sys.executable, "-m", "bertops.cli.main", "cluster", "down", "--name", name],
        env=dict(os.environ, BERTOPS_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def wait_members(process: ServingProcess) -> list[int]:
    """The pids of the process's session once its child started too."""
    pid, started = (int(x) for x in (process.folder / "pid").read_text().split())
    for _ in range(100):
        members = session_members(pid, started)
        if len(members) >= 2:
            return members
        time.sleep(0.05)
    raise AssertionError(f"{process.folder} did not start its child")
