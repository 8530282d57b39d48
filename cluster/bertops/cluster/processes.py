"""The processes of an embedded cluster: free loopback ports, starting etcd and
kube-apiserver in their own session with a private umask and log, telling whether a pid
still runs a given binary, and stopping one.

Used by :class:`bertops.cluster.controlplane.cluster.Cluster`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from bertops.cluster.files import UMASK, open_private_append

# Children started by this process, kept so they are reaped (not left as zombies) and so
# Popen's destructor does not warn about a still-running process we meant to keep.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive(pid: int | None, binary_name: str) -> bool:
    """True when pid runs binary_name (guards against a recycled pid)."""
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None:
        # Our own unreaped child cannot have a recycled pid. Its /proc/PID/cmdline is
        # briefly empty: Popen returns once exec has closed the error pipe, before the
        # kernel has set up the new program's arguments. Reading it then made a starting
        # kube-apiserver look dead on a busy machine.
        return child.poll() is None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return status != "Z" and Path(cmdline).name == binary_name


def spawn(
    argv: list[str], log_path: Path, umask: int = UMASK, env: dict[str, str] | None = None
) -> int:
    """Start argv with stdout and stderr appended to log_path (0600); return its pid.
    The umask keeps what etcd and kube-apiserver write private; the node's containerd
    needs the usual 022, or every image it unpacks has a root folder only root can enter.
    ``env``: variables added to this process's environment (secrets stay off argv)."""
    log = open_private_append(log_path)
    try:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the CLI that started it; `down` stops it
            umask=umask,
            env={**os.environ, **env} if env else None,
        )
    finally:
        os.close(log)
    _CHILDREN[proc.pid] = proc
    return proc.pid


def terminate(pid: int, name: str, timeout: float) -> None:
    """SIGTERM pid's process group, SIGKILL it after timeout, and wait until it is gone."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid, name):
            _reap(pid)
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while alive(pid, name):
        time.sleep(0.05)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our child (no zombie left)."""
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        proc.wait(timeout=5)


def exit_status(pid: int | None) -> str:
    """How a child started here ended ("exit code 1", "killed by SIGKILL"), for error
    messages about a process that died with nothing in its log; "" when unknown."""
    proc = _CHILDREN.get(pid) if pid else None
    code = proc.poll() if proc is not None else None
    if code is None:
        return ""
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"
