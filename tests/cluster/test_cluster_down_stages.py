"""``bertops cluster down`` always finishes: the pid walk looks only in the local
runtime's state dir and survives folders vanishing under it (containerd removes its
snapshots while down runs), and every stage runs even when one before it failed, with
each failure reported at the end and a non-zero exit."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bertops.cluster.processes import alive
from bertops.operator.deployment.processes import ServingProcess
from bertops.operator.runtime.local import recorded_alive, stop_recorded
from tests.cluster.test_cluster_down_local_runtime import cluster_down


@contextmanager
def churning(root: Path) -> Iterator[list[int]]:
    """Create and delete nested folders (each holding a ``pid`` file) under root as fast
    as possible until the block ends, as containerd does with its snapshots; yields the
    running count of folders removed."""
    removed = [0]
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            for index in range(20):
                folder = root / f"snapshot-{index}" / "fs" / "usr" / "lib"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "pid").write_text("1 1")
            for index in range(20):
                shutil.rmtree(root / f"snapshot-{index}", ignore_errors=True)
                removed[0] += 1

    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    try:
        yield removed
    finally:
        stop.set()
        worker.join(timeout=10)


def test_the_pid_walk_survives_folders_vanishing_while_it_runs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = ServingProcess(state / "serving" / "default" / "web" / "gateway")
    server.start(["sleep", "600"], {})
    with churning(state / "steps") as removed:
        for _ in range(200):  # each walk meets folders removed between listing and entering
            assert server.folder in recorded_alive(state)
        stopped = stop_recorded(state, timeout=5)
    assert removed[0] > 200, "the churn never overlapped the walks"
    assert stopped == [server.folder]
    assert not server.alive()


@pytest.fixture
def start_named() -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Starts processes whose command line starts with a name (as etcd's and
    kube-apiserver's do), each leading its own process group as the cluster's do; kills
    what is left when the test ends, passed or not."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            ["bash", "-c", f"exec -a {name} sleep 600"], start_new_session=True
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_down_runs_every_stage_after_a_failure_and_reports_it(
    tmp_path: Path, start_named: Callable[[str], subprocess.Popen[bytes]]
) -> None:
    cluster_dir = tmp_path / "clusters" / "broken"
    server = ServingProcess(cluster_dir / "demo" / "state" / "serving" / "default" / "web" / "m1")
    server.start(["sleep", "600"], {})
    apiserver, etcd = start_named("kube-apiserver"), start_named("etcd")
    # The node's state file is unreadable: its stage fails, the rest must still run.
    (cluster_dir / "node").mkdir(parents=True)
    (cluster_dir / "node" / "node.json").write_text("{not json")
    state = {"name": "broken", "apiserver_pid": apiserver.pid, "etcd_pid": etcd.pid}
    (cluster_dir / "cluster.json").write_text(json.dumps(state))
    for process, name in ((apiserver, "kube-apiserver"), (etcd, "etcd")):
        for _ in range(100):
            if alive(process.pid, name):
                break
            threading.Event().wait(0.02)
        assert alive(process.pid, name), f"{name} stand-in did not start"

    with churning(cluster_dir / "node" / "containerd") as removed:
        down = cluster_down(tmp_path, "broken")

    assert removed[0] > 0
    assert down.returncode == 1, down.stderr
    assert "error: down: node: node state: JSONDecodeError" in down.stderr
    assert "1 stage(s) failed; every other stage ran" in down.stderr
    # The stages after the failed one ran: the runtime's server, the API server and etcd.
    assert apiserver.wait(timeout=30) is not None and etcd.wait(timeout=30) is not None
    assert not server.alive()
    saved = json.loads((cluster_dir / "cluster.json").read_text())
    assert saved["apiserver_pid"] is None and saved["etcd_pid"] is None
    assert "stopped demo/state/serving/default/web/m1" in down.stderr
    assert "cluster 'broken' stopped" in down.stderr
