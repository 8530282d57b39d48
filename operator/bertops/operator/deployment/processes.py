"""Serving processes of the local runtime: one folder per model server or gateway, under
``<state>/serving/<namespace>/<deployment>/<name>/``, holding ``ports.json``, ``pid`` (pid
and start time), ``stdout.log``/``stderr.log`` and, once the process ended,
``exit_code``.

Like the steps of :mod:`bertops.operator.runtime.local`, each process runs in its own
session (it outlives an operator restart) and is trusted by pid only together with its
recorded start time, so a restarted operator adopts it instead of starting a second one,
and never signals a pid the kernel gave to someone else. Used by
:mod:`bertops.operator.deployment.local`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from bertops.operator.runtime.local import (
    is_same_process,
    process_start_time,
    session_members,
    stop_session,
)

log = logging.getLogger(__name__)

# The exit code is written only after the process ended, atomically (as for steps).
_WRAPPER = '"$@" >stdout.log 2>stderr.log; echo $? >exit_code.tmp && mv exit_code.tmp exit_code'
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
KILL_AFTER_SECONDS = 45.0  # past the servers' own graceful drain (30 s)


def free_port() -> int:
    """A loopback port nobody listens on now (the process binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def executable(command: tuple[str, ...]) -> list[str]:
    """The command with ``bertops`` resolved next to this interpreter (a venv works
    without activation)."""
    base = list(command)
    if base and base[0] == "bertops":
        sibling = Path(sys.executable).parent / "bertops"
        base[0] = str(sibling) if sibling.exists() else shutil.which("bertops") or "bertops"
    return base


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


class ServingProcess:
    """One model server or gateway process, known by its folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def started(self) -> bool:
        return (self.folder / "pid").exists()

    def ports(self) -> dict[str, int]:
        try:
            return {
                k: int(v) for k, v in json.loads((self.folder / "ports.json").read_text()).items()
            }
        except (OSError, ValueError):
            return {}

    def url(self, port: str = "http") -> str:
        return f"http://127.0.0.1:{self.ports().get(port, 0)}"

    def _pid(self) -> tuple[int, int | None]:
        parts = (self.folder / "pid").read_text().split()
        return int(parts[0]), (int(parts[1]) if len(parts) > 1 else None)

    def alive(self) -> bool:
        _reap()
        if not self.started or (self.folder / "exit_code").exists():
            return False
        try:
            return is_same_process(*self._pid())
        except (OSError, ValueError):  # removed meanwhile (stopped), or half written
            return False

    def start(
        self, command: list[str], ports: Mapping[str, int], env: Mapping[str, str] | None = None
    ) -> None:
        """Start the process (its folder is wiped first: a dead predecessor's files go)."""
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        write_atomically(self.folder / "ports.json", json.dumps(dict(ports)))
        full_env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **(env or {}))
        full_env.setdefault("CUDA_VISIBLE_DEVICES", "")
        proc = subprocess.Popen(
            ["bash", "-c", _WRAPPER, "bertops-serving", *command],
            cwd=self.folder,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _CHILDREN[proc.pid] = proc
        started = process_start_time(proc.pid)
        write_atomically(
            self.folder / "pid", f"{proc.pid} {started if started is not None else ''}"
        )
        log.info("started %s (pid %d) on %s", self.folder, proc.pid, dict(ports))

    def healthy(self, path: str, timeout: float = 1.0) -> bool:
        if not self.alive():
            return False
        try:
            return httpx.get(self.url() + path, timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def retire(self) -> float:
        """Mark the process as no longer routed (once); returns when that happened."""
        marker = self.folder / "retired"
        if not marker.exists():
            write_atomically(marker, str(time.time()))
        return float(marker.read_text().strip() or 0)

    def unretire(self) -> None:
        (self.folder / "retired").unlink(missing_ok=True)

    def terminate(self) -> bool:
        """SIGTERM once (it drains its in-flight requests and exits), SIGKILL past
        :data:`KILL_AFTER_SECONDS`; True once it is gone and its folder removed. Gone
        means its whole session: the bash wrapper dies on SIGTERM at once, the server
        only once drained, and its folder (the only record of it) must outlive it."""
        if self._running():
            marker = self.folder / "stopping"
            if not marker.exists():
                write_atomically(marker, str(time.time()))
                self._signal(signal.SIGTERM)
            elif time.time() - float(marker.read_text() or 0) > KILL_AFTER_SECONDS:
                self._signal(signal.SIGKILL)
            return False
        shutil.rmtree(self.folder, ignore_errors=True)
        return True

    def kill_now(self, timeout: float = 10.0) -> None:
        """Stop at once (deletion of the deployment): SIGTERM, then SIGKILL, to the
        wrapper and the server alike."""
        with contextlib.suppress(OSError, ValueError):  # no (readable) pid: never started
            stop_session(*self._pid(), timeout=timeout)
        _reap()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _running(self) -> bool:
        """Whether any process of its session still runs (the wrapper or the server)."""
        _reap()
        try:
            return bool(session_members(*self._pid()))
        except (OSError, ValueError):
            return False

    def _signal(self, sig: signal.Signals) -> None:
        try:
            pid, started = self._pid()
        except (OSError, ValueError):
            return
        # Identity re-checked right before (never a stranger), member by member: the
        # server outlives its wrapper, whose pid alone would then no longer be trusted.
        for member in session_members(pid, started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, sig)

    def failure(self) -> str | None:
        """Why the process ended, when it did (the last line of its stderr)."""
        exit_file = self.folder / "exit_code"
        if not exit_file.exists():
            return None
        try:
            lines = [ln for ln in (self.folder / "stderr.log").read_text().splitlines() if ln]
        except OSError:
            lines = []
        code = exit_file.read_text().strip()
        return f"{self.name} exited with code {code}: {lines[-1][:300] if lines else 'no output'}"


def _reap() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]
