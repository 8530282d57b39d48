"""The embedded cluster's process helpers on real processes: a child is alive from the
moment spawn returns (its /proc cmdline may still be empty then), and is gone after
terminate."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from bertops.cluster.processes import alive, exit_status, spawn, terminate


def test_a_just_spawned_child_is_alive_until_terminated(tmp_path: Path) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    pids = [spawn([sleep, "30"], tmp_path / f"sleep-{i}.log") for i in range(40)]
    try:
        # Checked right away, as the cluster's start-up loop does: never "dead" while exec
        # is still setting up the new program.
        assert all(alive(pid, "sleep") for pid in pids)
    finally:
        for pid in pids:
            terminate(pid, "sleep", timeout=5)
    assert not any(alive(pid, "sleep") for pid in pids)


def test_a_child_that_exits_reports_how(tmp_path: Path) -> None:
    false = shutil.which("false")
    assert false is not None
    pid = spawn([false], tmp_path / "false.log")
    for _ in range(100):
        if not alive(pid, "false"):
            break
        time.sleep(0.05)
    assert not alive(pid, "false")
    assert exit_status(pid) == "exit code 1"


def test_a_pid_that_is_not_ours_is_checked_by_its_binary() -> None:
    assert not alive(1, "kube-apiserver")
    assert not alive(None, "kube-apiserver")
