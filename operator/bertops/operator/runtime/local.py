"""The local runtime: each step is a process on this machine running the same
``bertops trainer <step> --spec FILE`` command a Kubernetes Job would run.

A step's folder (``<state>/steps/<namespace>/<name>/``) holds spec.json, owner (the UID
of the object it belongs to), stdout.log (JSON progress lines), stderr.log, pid (pid and
start time), exit_code and result.json. Steps run in their own session, so they outlive an
operator restart; the restarted operator finds them by their deterministic name and never
starts a duplicate. A pid is trusted only together with the process start time recorded
beside it, so a pid the kernel has since given to another process is never signalled nor
reported as Running. Used by the reconcilers through
:class:`bertops.operator.runtime.base.Runtime`; :func:`stop_recorded` stops whatever a
state dir still records once its operator is gone for good (``bertops cluster down``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from bertops.api.steps import ProgressEvent, StepResult
from bertops.operator.config import OperatorConfig
from bertops.operator.runtime.base import (
    UID_TAG,
    StepObservation,
    StepPhase,
    StepRequest,
    exited_ok,
    uid_tag,
)

log = logging.getLogger(__name__)

# Writes the exit code only after the step ended, atomically, so "exit_code exists" means
# "finished" even when the operator was down while the step ran.
_WRAPPER = '"$@" >stdout.log 2>stderr.log; echo $? >exit_code.tmp && mv exit_code.tmp exit_code'

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def process_start_time(pid: int) -> int | None:
    """The start time of a live (not zombie) process, in clock ticks since boot (field 22
    of /proc/<pid>/stat); None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] == "Z":
        return None
    return int(fields[19])


def is_same_process(pid: int, started: int | None) -> bool:
    """Whether pid is still the process that was started at ``started``. Without a
    recorded start time the pid cannot be trusted, so the answer is no."""
    return started is not None and process_start_time(pid) == started


def _session_of(pid: int) -> int | None:
    """The session id of a live (not zombie) process (field 6 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return None if len(fields) < 4 or fields[0] == "Z" else int(fields[3])


def session_members(pid: int, started: int | None) -> list[int]:
    """The live processes of the session a recorded process leads (steps and serving
    processes each start one). The bash wrapper (the leader) dies on SIGTERM at once while
    its child may still run: Linux never hands out a pid still in use as a session id, so
    while the recorded pid has no process, every process of session ``pid`` is ours; once
    the pid belongs to another process (another start time), none is."""
    if started is None:
        return []
    leader_start = process_start_time(pid)
    if leader_start is not None and leader_start != started:
        return []  # the pid was reused: whatever runs in that session is a stranger's
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _session_of(int(entry.name)) == pid:
            members.append(int(entry.name))
    return members


def stop_session(pid: int, started: int | None, timeout: float = 10.0) -> bool:
    """SIGTERM every process of the recorded process's session, SIGKILL what is left
    after ``timeout``; identity re-checked before each signal. True when something ran."""
    members = session_members(pid, started)
    if not members:
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for member in session_members(pid, started):
            with contextlib.suppress(ProcessLookupError):  # it ended in between
                os.kill(member, sig)
        deadline = time.monotonic() + wait
        while session_members(pid, started) and time.monotonic() < deadline:
            LocalRuntime._reap()
            time.sleep(0.1)
    return True


def recorded_pid_files(root: Path) -> list[Path]:
    """Every ``pid`` file under root, sorted. Folders come and go while this walks (a
    step removed by its operator, a container's snapshot removed by containerd when root
    is wider than a state dir): a folder that vanished is skipped, never an error
    (os.walk ignores scandir errors, where Path.rglob raises FileNotFoundError)."""
    found = [Path(folder) / "pid" for folder, _, files in os.walk(root) if "pid" in files]
    return sorted(found)


def stop_recorded(root: Path, timeout: float = 10.0) -> list[Path]:
    """Stop every process recorded by a ``pid`` file (pid and start time) under root: the
    step and serving folders of a state dir, left behind by an operator that is gone. The
    folders that had a live process."""
    stopped = []
    for pid_file in recorded_pid_files(root):
        try:
            pid, started = _read_pid(pid_file.parent)
        except (OSError, ValueError):
            continue  # half written, or removed meanwhile
        if stop_session(pid, started, timeout):
            stopped.append(pid_file.parent)
    return stopped


def recorded_alive(root: Path) -> list[Path]:
    """The folders under root whose recorded process (or a process of its session) runs."""
    alive = []
    for pid_file in recorded_pid_files(root):
        try:
            if session_members(*_read_pid(pid_file.parent)):
                alive.append(pid_file.parent)
        except (OSError, ValueError):
            continue
    return alive


def tail_text(path: Path, max_bytes: int = 16384) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - max_bytes))
        return handle.read().decode("utf-8", errors="replace")


def last_progress(stdout: str) -> ProgressEvent | None:
    """The newest JSON progress line of a step's stdout (other lines are ignored)."""
    for raw in reversed(stdout.splitlines()):
        line = raw.strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if data.get("event") in ("start", "progress", "epoch", "checkpoint"):
            try:
                return ProgressEvent.model_validate(data)
            except ValidationError:
                continue
    return None


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _read_pid(folder: Path) -> tuple[int, int | None]:
    """(pid, start time) from a step folder; the start time is None in folders written
    before it was recorded."""
    parts = (folder / "pid").read_text().split()
    if not parts:
        raise ValueError(f"{folder / 'pid'} is empty (being written)")
    return int(parts[0]), (int(parts[1]) if len(parts) > 1 else None)


class LocalRuntime:
    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.root = config.state_dir / "steps"

    def _dir(self, namespace: str, name: str) -> Path:
        return self.root / namespace / name

    def command(self, request: StepRequest, spec_file: Path) -> list[str]:
        base = list(self.config.step_command)
        if base[0] == "bertops":
            # The bertops next to this interpreter, so a venv works without activation.
            sibling = Path(sys.executable).parent / "bertops"
            base[0] = str(sibling) if sibling.exists() else shutil.which("bertops") or "bertops"
        command = [*base, request.kind, "--spec", str(spec_file)]
        if request.replicas > 1:
            # N torch.distributed ranks on loopback via the trainer's launcher.
            command = [
                *base,
                "launch",
                "--nproc",
                str(request.replicas),
                request.kind,
                "--spec",
                str(spec_file),
            ]
        return command

    def start(self, request: StepRequest) -> None:
        folder = self._dir(request.namespace, request.name)
        if (folder / "pid").exists():
            return  # already started (possibly by an earlier operator process)
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(folder / "owner", request.owner_uid)
        spec = request.spec.model_copy(update={"result_uri": str(folder / "result.json")})
        spec_file = folder / "spec.json"
        spec_file.write_text(spec.model_dump_json(by_alias=True, exclude_none=True, indent=2))
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
        if request.gpu == 0:
            env.setdefault("CUDA_VISIBLE_DEVICES", "")
        proc = subprocess.Popen(
            ["bash", "-c", _WRAPPER, "bertops-step", *self.command(request, spec_file)],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _CHILDREN[proc.pid] = proc
        # Not reaped yet (we hold the Popen), so the pid is still this process's.
        started = process_start_time(proc.pid)
        _write_atomically(folder / "pid", f"{proc.pid} {started if started is not None else ''}")
        log.info("started step %s/%s (pid %d)", request.namespace, request.name, proc.pid)

    def observe(self, namespace: str, name: str, owner_uid: str = "") -> StepObservation:
        folder = self._dir(namespace, name)
        if not (folder / "pid").exists() or not self._owned_by(folder, owner_uid):
            return StepObservation(StepPhase.ABSENT)
        self._reap()
        if (finished := self._finished(folder)) is not None:
            return finished
        if is_same_process(*_read_pid(folder)):
            return StepObservation(
                StepPhase.RUNNING, progress=last_progress(tail_text(folder / "stdout.log"))
            )
        # Re-check: the step may have finished between the two reads.
        if (finished := self._finished(folder)) is not None:
            return finished
        return StepObservation(
            StepPhase.FAILED,
            message="the step process vanished without an exit code (killed with its host?)",
        )

    @staticmethod
    def _owned_by(folder: Path, owner_uid: str) -> bool:
        owner = folder / "owner"
        return not owner_uid or not owner.exists() or owner.read_text().strip() == owner_uid

    def _finished(self, folder: Path) -> StepObservation | None:
        exit_file = folder / "exit_code"
        if not exit_file.exists():
            return None
        exit_code = int(exit_file.read_text().strip() or 1)
        ended_at = datetime.fromtimestamp(exit_file.stat().st_mtime, UTC)
        result = None
        if (folder / "result.json").exists():
            try:
                result = StepResult.model_validate_json((folder / "result.json").read_text())
            except ValidationError as error:
                log.warning("unreadable result in %s: %s", folder, error)
        if exit_code == 0:
            return exited_ok(
                result,
                ended_at,
                f"the step exited 0 but {folder / 'result.json'} is missing, "
                f"unreadable or not a success; check {folder / 'stderr.log'}",
            )
        message = result.message if result and result.message else self._stderr_hint(folder)
        if (folder / "stopped").exists():
            message = "stopped by the operator"
        return StepObservation(
            StepPhase.FAILED,
            result=result,
            exit_code=exit_code,
            ended_at=ended_at,
            message=f"exit code {exit_code}: {message}",
        )

    @staticmethod
    def _stderr_hint(folder: Path) -> str:
        lines = [ln for ln in tail_text(folder / "stderr.log", 4096).splitlines() if ln.strip()]
        return lines[-1][:500] if lines else "no output"

    def stop(self, namespace: str, name: str, timeout: float = 10.0) -> bool:
        folder = self._dir(namespace, name)
        if not (folder / "pid").exists() or (folder / "exit_code").exists():
            return False
        pid, started = _read_pid(folder)
        if not is_same_process(pid, started):
            return False  # gone, or the pid now belongs to someone else: never signal it
        (folder / "stopped").touch()
        self._signal(pid, started, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while is_same_process(pid, started) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.1)
        self._signal(pid, started, signal.SIGKILL)
        self._reap()
        log.info("stopped step %s/%s", namespace, name)
        return True

    @staticmethod
    def _signal(pid: int, started: int | None, sig: signal.Signals) -> None:
        """Signal the step's process group, re-checking its identity right before."""
        if not is_same_process(pid, started):
            return
        with contextlib.suppress(ProcessLookupError):  # it ended in between
            os.killpg(pid, sig)

    def remove(self, namespace: str, name: str) -> bool:
        """Remove a finished step's folder. A step still running (a process of its session
        lives) or still being started (no pid recorded yet) is left alone: False."""
        folder = self._dir(namespace, name)
        if not folder.is_dir():
            return False
        self._reap()
        try:
            running = bool(session_members(*_read_pid(folder)))
        except FileNotFoundError:
            running = True  # start() has not recorded its pid yet
        if running:
            log.debug("step %s/%s still runs: not removed", namespace, name)
            return False
        shutil.rmtree(folder)
        log.debug("removed finished step %s/%s", namespace, name)
        return True

    def cleanup(self, namespace: str, owner_uid: str) -> list[str]:
        """Stop the object's steps (bounded: SIGKILL after the stop timeout) and remove
        their folders."""
        folder = self.root / namespace
        if not owner_uid or not folder.is_dir():
            return []
        removed = []
        ours = f"-{uid_tag(owner_uid)}"
        for step in sorted(folder.iterdir()):
            # A name ending in another UID's tag is another object's step: skipped
            # unread, so deleting each of N objects reads its own few owner files, not
            # the N (O(N^2) file reads for a namespace deleted whole). Names without a
            # tag are read, so the naming convention is a shortcut, never a rule.
            if UID_TAG.search(step.name) and not step.name.endswith(ours):
                continue
            owner = step / "owner"
            if not owner.exists() or owner.read_text().strip() != owner_uid:
                continue
            self.stop(namespace, step.name)
            shutil.rmtree(step)
            removed.append(step.name)
        return removed

    @staticmethod
    def _reap() -> None:
        for pid, proc in list(_CHILDREN.items()):
            if proc.poll() is not None:
                del _CHILDREN[pid]
