"""The embedded control plane's lifecycle: cached binaries are reused, a second cluster
runs beside the first, and `down` leaves no kube-apiserver or etcd process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bertops.cluster.controlplane import Cluster
from bertops.cluster.controlplane.build import cached_binaries
from bertops.cluster.processes import alive

pytestmark = pytest.mark.integration


def bertops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bertops.cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ),
        timeout=180,
    )


def test_up_twice_reuses_cache_and_down_stops_everything(cluster: Any) -> None:
    binaries = cached_binaries()
    assert binaries is not None, "the session fixture built or found the binaries"
    mtimes = (binaries.kube_apiserver.stat().st_mtime, binaries.etcd.stat().st_mtime)

    try:
        first = bertops("cluster", "up", "--name", "second")
        assert first.returncode == 0, first.stderr
        assert "compile" not in first.stderr  # nothing was built
        again = bertops("cluster", "up", "--name", "second")
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stderr
        assert (binaries.kube_apiserver.stat().st_mtime, binaries.etcd.stat().st_mtime) == mtimes

        second = Cluster("second")
        state = second.state()
        # Beside the session cluster: both ready, on different ports and data folders.
        assert cluster.ready() and second.ready()
        assert state.server != cluster.state().server
        status = json.loads(bertops("cluster", "status", "--name", "second").stdout)
        assert status["ready"] and status["versions"]["kubernetes"]

        env = bertops("cluster", "env", "--name", "second").stdout
        assert env.strip() == f"export KUBECONFIG={second.kubeconfig}"

        down = bertops("cluster", "down", "--name", "second", "--purge")
        assert down.returncode == 0, down.stderr
        assert not alive(state.apiserver_pid, "kube-apiserver")
        assert not alive(state.etcd_pid, "etcd")
        assert not Path(second.directory).exists()
        assert cluster.ready(), "the session cluster is untouched"
        assert bertops("cluster", "status", "--name", "second").returncode == 1
    finally:
        Cluster("second").down(purge=True)  # no leak when an assertion fails
