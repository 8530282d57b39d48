"""The local runtime: each step is a process on this machine running the same
``bertops trainer <step> --spec FILE`` command a Kubernetes Job would run.

A step's folder (``<state>/steps/<namespace>/<name>/``) holds spec.json, stdout.log (JSON
progress lines), stderr.log, pid, exit_code and result.json. Steps run in their own
session, so they outlive an operator restart; the restarted operator finds them by
their deterministic name and never starts a duplicate. Used by the reconcilers through
:class:`bertops.operator.runtime.base.Runtime`.
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
from pathlib import Path

from pydantic import ValidationError

from bertops.api.steps import ProgressEvent, StepResult
from bertops.operator.config import OperatorConfig
from bertops.operator.runtime.base import StepObservation, StepPhase, StepRequest

log = logging.getLogger(__name__)

# Writes the exit code only after the step ended, atomically, so "exit_code exists" means
# "finished" even when the operator was down while the step ran.
_WRAPPER = '"$@" >stdout.log 2>stderr.log; echo $? >exit_code.tmp && mv exit_code.tmp exit_code'

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


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
        tmp = folder / "pid.tmp"
        tmp.write_text(str(proc.pid))
        tmp.replace(folder / "pid")
        log.info("started step %s/%s (pid %d)", request.namespace, request.name, proc.pid)

    def observe(self, namespace: str, name: str) -> StepObservation:
        folder = self._dir(namespace, name)
        if not (folder / "pid").exists():
            return StepObservation(StepPhase.ABSENT)
        self._reap()
        exit_file = folder / "exit_code"
        if exit_file.exists():
            return self._finished(folder, int(exit_file.read_text().strip() or 1))
        pid = int((folder / "pid").read_text())
        if _pid_alive(pid):
            return StepObservation(
                StepPhase.RUNNING, progress=last_progress(tail_text(folder / "stdout.log"))
            )
        # Re-check: the step may have finished between the two reads.
        if exit_file.exists():
            return self._finished(folder, int(exit_file.read_text().strip() or 1))
        return StepObservation(
            StepPhase.FAILED,
            message="the step process vanished without an exit code (killed with its host?)",
        )

    def _finished(self, folder: Path, exit_code: int) -> StepObservation:
        result = None
        if (folder / "result.json").exists():
            try:
                result = StepResult.model_validate_json((folder / "result.json").read_text())
            except ValidationError as error:
                log.warning("unreadable result in %s: %s", folder, error)
        if exit_code == 0 and result is not None and result.succeeded:
            return StepObservation(StepPhase.SUCCEEDED, result=result)
        message = result.message if result and result.message else self._stderr_hint(folder)
        if (folder / "stopped").exists():
            message = "stopped by the operator"
        return StepObservation(
            StepPhase.FAILED, result=result, message=f"exit code {exit_code}: {message}"
        )

    @staticmethod
    def _stderr_hint(folder: Path) -> str:
        lines = [ln for ln in tail_text(folder / "stderr.log", 4096).splitlines() if ln.strip()]
        return lines[-1][:500] if lines else "no output"

    def stop(self, namespace: str, name: str, timeout: float = 10.0) -> bool:
        folder = self._dir(namespace, name)
        if not (folder / "pid").exists() or (folder / "exit_code").exists():
            return False
        pid = int((folder / "pid").read_text())
        if not _pid_alive(pid):
            return False
        (folder / "stopped").touch()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.1)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self._reap()
        log.info("stopped step %s/%s", namespace, name)
        return True

    def logs(self, namespace: str, name: str, lines: int = 50) -> str:
        folder = self._dir(namespace, name)
        text = tail_text(folder / "stderr.log") + tail_text(folder / "stdout.log")
        return "\n".join(text.splitlines()[-lines:])

    @staticmethod
    def _reap() -> None:
        for pid, proc in list(_CHILDREN.items()):
            if proc.poll() is not None:
                del _CHILDREN[pid]
