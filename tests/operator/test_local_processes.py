"""The local runtime's process handling, without an API server: a pid is trusted only
together with the start time recorded beside it (a reused pid is never reported as
Running nor signalled), exit 0 without a result is a failure, cleanup removes exactly
the deleted object's steps, and remove takes a finished step's folder, never a running
one's."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bertops.api.dataset import BertDatasetSpec
from bertops.api.steps import PrepareStep
from bertops.operator.config import OperatorConfig
from bertops.operator.planners.common import step_name
from bertops.operator.runtime.base import REASON_RESULT_UNREADABLE, StepPhase, StepRequest
from bertops.operator.runtime.local import LocalRuntime, process_start_time
from tests.operator import fake_step


def make_runtime(tmp_path: Path) -> LocalRuntime:
    return LocalRuntime(
        OperatorConfig(
            state_dir=tmp_path / "state",
            artifact_root=str(tmp_path / "artifacts"),
            step_command=fake_step.COMMAND,
        )
    )


def request(tmp_path: Path, name: str, uid: str, script: str) -> StepRequest:
    dataset = BertDatasetSpec.model_validate(
        {"source": {"uri": script}, "tokenizer": {"baseModel": {"package": "x"}}}
    )
    spec = PrepareStep(name=name, dataset=dataset, output_uri=str(tmp_path / "out" / name))
    return StepRequest(name=name, namespace="ns", spec=spec, owner={"uid": uid})


def settle(runtime: LocalRuntime, name: str, uid: str = "") -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        observed = runtime.observe("ns", name, uid)
        if observed.phase not in (StepPhase.RUNNING, StepPhase.ABSENT):
            return observed
        time.sleep(0.05)
    raise AssertionError(f"step {name} did not finish")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own session, as a step runs."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def fake_step_folder(runtime: LocalRuntime, name: str, pid_file: str) -> None:
    folder = runtime.root / "ns" / name
    folder.mkdir(parents=True)
    (folder / "pid").write_text(pid_file)


def test_a_reused_pid_is_neither_running_nor_signalled(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    runtime = make_runtime(tmp_path)
    started = process_start_time(sleeper.pid)
    assert started is not None
    # The pid file of a step that ended long ago; the kernel gave its pid to `sleeper`.
    fake_step_folder(runtime, "stale", f"{sleeper.pid} {started - 1}")
    # A folder written before start times were recorded: the pid cannot be trusted.
    fake_step_folder(runtime, "legacy", f"{sleeper.pid}")
    for name in ("stale", "legacy"):
        observed = runtime.observe("ns", name)
        assert observed.phase == StepPhase.FAILED and "vanished" in observed.message
        assert runtime.stop("ns", name, timeout=1) is False
    time.sleep(0.2)
    assert sleeper.poll() is None, "a process that is not the step was signalled"

    fake_step_folder(runtime, "ours", f"{sleeper.pid} {started}")
    assert runtime.observe("ns", "ours").phase == StepPhase.RUNNING
    assert runtime.stop("ns", "ours", timeout=5) is True
    assert sleeper.wait(10) != 0


def test_start_time_is_read_past_an_odd_command_name(tmp_path: Path) -> None:
    """/proc/<pid>/stat puts the command name in parentheses, and it may hold spaces and
    parentheses itself: the fields after it must still be found."""
    before = process_start_time(os.getpid())
    odd = tmp_path / "a) (b c"
    odd.symlink_to(shutil.which("sleep") or "/bin/sleep")
    proc = subprocess.Popen([str(odd), "30"], start_new_session=True)
    plain = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert before is not None
        odd_start, plain_start = process_start_time(proc.pid), process_start_time(plain.pid)
        assert odd_start is not None and plain_start is not None
        assert before <= odd_start <= plain_start
    finally:
        for each in (proc, plain):
            each.kill()
            each.wait()


def test_exit_zero_without_a_result_is_a_failure(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    script = fake_step.write_script(tmp_path / "artifacts" / "s.json", [0], result=False)
    runtime.start(request(tmp_path, "quiet", "uid-1", script))
    observed = settle(runtime, "quiet")
    assert observed.phase == StepPhase.FAILED and observed.result is None
    assert observed.reason == REASON_RESULT_UNREADABLE and observed.exit_code == 0
    assert "result.json" in observed.message and "stderr.log" in observed.message


def test_exit_code_and_end_time_are_observed(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    script = fake_step.write_script(tmp_path / "artifacts" / "s.json", [3])
    runtime.start(request(tmp_path, "flaky", "uid-1", script))
    observed = settle(runtime, "flaky")
    assert observed.phase == StepPhase.FAILED and observed.exit_code == 3
    assert observed.ended_at is not None and observed.reason == ""


def test_a_step_of_another_owner_is_not_observed_as_ours(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    script = fake_step.write_script(tmp_path / "artifacts" / "s.json", [0])
    runtime.start(request(tmp_path, "done", "uid-old", script))
    assert settle(runtime, "done", "uid-old").phase == StepPhase.SUCCEEDED
    assert runtime.observe("ns", "done", "uid-new").phase == StepPhase.ABSENT


def test_cleanup_stops_and_removes_only_the_objects_steps(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    slow = fake_step.write_script(tmp_path / "artifacts" / "slow.json", [0], sleep=60)
    quick = fake_step.write_script(tmp_path / "artifacts" / "quick.json", [0])
    runtime.start(request(tmp_path, "a-1", "uid-a", slow))
    runtime.start(request(tmp_path, "b-1", "uid-b", quick))
    settle(runtime, "b-1")
    pid = int((runtime.root / "ns" / "a-1" / "pid").read_text().split()[0])
    assert runtime.observe("ns", "a-1").phase == StepPhase.RUNNING

    assert runtime.cleanup("ns", "uid-a") == ["a-1"]
    assert not (runtime.root / "ns" / "a-1").exists()
    assert (runtime.root / "ns" / "b-1").exists()
    assert process_start_time(pid) is None, "the step process still runs"


def test_cleanup_reads_the_owner_files_of_its_own_steps_only(tmp_path: Path) -> None:
    """A name ending in another UID's tag is skipped unread (deleting each of N objects
    must not read N owner files); a name without a tag is still read."""
    runtime = make_runtime(tmp_path)
    quick = fake_step.write_script(tmp_path / "artifacts" / "quick.json", [0])
    uid_a, uid_b = "6f1c2d3e-0000-4000-8000-00000000000a", "9a8b7c6d-0000-4000-8000-00000000000b"
    mine, legacy = step_name("a", "prep", 1, uid_a), "a-legacy"
    theirs = step_name("b", "prep", 1, uid_b)
    for name, uid in ((mine, uid_a), (legacy, uid_a), (theirs, uid_b)):
        runtime.start(request(tmp_path, name, uid, quick))
        settle(runtime, name)
    unreadable = runtime.root / "ns" / theirs / "owner"
    unreadable.unlink()
    unreadable.mkdir()  # reading it would raise IsADirectoryError

    assert sorted(runtime.cleanup("ns", uid_a)) == sorted([mine, legacy])
    assert (runtime.root / "ns" / theirs).is_dir()


def test_remove_deletes_a_finished_steps_folder_and_never_a_running_one(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    slow = fake_step.write_script(tmp_path / "artifacts" / "slow.json", [0], sleep=60)
    quick = fake_step.write_script(tmp_path / "artifacts" / "quick.json", [0])
    failing = fake_step.write_script(tmp_path / "artifacts" / "failing.json", [3])
    runtime.start(request(tmp_path, "done", "uid-a", quick))
    runtime.start(request(tmp_path, "failed", "uid-a", failing))
    runtime.start(request(tmp_path, "running", "uid-a", slow))
    assert settle(runtime, "done").phase == StepPhase.SUCCEEDED
    assert settle(runtime, "failed").phase == StepPhase.FAILED
    assert runtime.observe("ns", "running").phase == StepPhase.RUNNING

    assert runtime.remove("ns", "done") is True
    assert runtime.remove("ns", "failed") is True
    assert not (runtime.root / "ns" / "done").exists()
    assert not (runtime.root / "ns" / "failed").exists()
    assert runtime.observe("ns", "done").phase == StepPhase.ABSENT

    assert runtime.remove("ns", "running") is False  # refused: it still runs
    assert runtime.observe("ns", "running").phase == StepPhase.RUNNING
    assert runtime.remove("ns", "never-started") is False  # absent
    assert runtime.remove("ns", "done") is False  # already removed

    assert runtime.stop("ns", "running", timeout=5) is True
    deadline = time.monotonic() + 10  # the step's python child dies right after its leader
    while not runtime.remove("ns", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (runtime.root / "ns" / "running").exists()  # stopped is finished: removed
    assert list((runtime.root / "ns").iterdir()) == []


def test_remove_leaves_a_step_being_started_and_trusts_no_reused_pid(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    runtime = make_runtime(tmp_path)
    starting = runtime.root / "ns" / "starting"
    starting.mkdir(parents=True)
    (starting / "owner").write_text("uid-a")  # start() writes the pid file last
    assert runtime.remove("ns", "starting") is False
    assert starting.exists()

    started = process_start_time(sleeper.pid)
    assert started is not None
    # A step that vanished long ago; the kernel gave its pid to `sleeper`: finished.
    fake_step_folder(runtime, "stale", f"{sleeper.pid} {started - 1}")
    assert runtime.remove("ns", "stale") is True
    # A live process recorded with its own start time is a running step.
    fake_step_folder(runtime, "live", f"{sleeper.pid} {started}")
    assert runtime.remove("ns", "live") is False
    time.sleep(0.2)
    assert sleeper.poll() is None, "removing a step signalled a process"
