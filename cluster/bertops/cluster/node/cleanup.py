"""What `bertops cluster down` must remove after a node's processes stop, so nothing is
left outside the cluster's folder: processes still running for the node (containerd's
shims and the pods' processes, found by the node's cgroup and its containerd socket),
every mount under the node's folder (container root filesystems, pod network
namespaces, volumes), and the node's cgroups.

It also creates the node's cgroups before the kubelet starts (:func:`make_cgroups`), so
the one module that removes them knows exactly what was made. Called by
:class:`bertops.cluster.node.node.Node`; pure parts unit-tested.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from bertops.cluster.mounts import unmount_all

__all__ = ["unmount_all"]  # the node's clean-up uses the shared unmounting

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_dirs(cgroup_root: str) -> list[Path]:
    """The node's cgroup folder in every hierarchy that has one (v1 controllers and the
    unified one), e.g. /sys/fs/cgroup/memory/bertops-demo."""
    relative = cgroup_root.strip("/")
    found = []
    if CGROUP_ROOT.is_dir():
        for hierarchy in sorted(CGROUP_ROOT.iterdir()):
            candidate = hierarchy / relative
            if candidate.is_dir():
                found.append(candidate)
        if (CGROUP_ROOT / relative).is_dir() and (CGROUP_ROOT / relative) not in found:
            found.append(CGROUP_ROOT / relative)
    return found


def make_cgroups(cgroup_root: str) -> list[Path]:
    """Create the node's cgroup in every v1 hierarchy and the unified one, which the
    kubelet requires before it starts; cpuset gets its parent's cpus and mems (a new
    cpuset cgroup starts empty, and no task may join an empty one)."""
    relative = cgroup_root.strip("/")
    made = []
    for hierarchy in sorted(CGROUP_ROOT.iterdir()) if CGROUP_ROOT.is_dir() else []:
        if not (hierarchy / "cgroup.procs").exists():
            continue  # not a mounted hierarchy
        target = hierarchy / relative
        target.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (target / name).exists() and not (target / name).read_text().strip():
                (target / name).write_text((hierarchy / name).read_text())
        made.append(target)
    return made


def pids_in_cgroups(directories: list[Path]) -> set[int]:
    """The processes in the cgroup trees. Cgroups of exiting containers vanish during the
    walk: os.walk skips them (Path.rglob would raise FileNotFoundError)."""
    pids: set[int] = set()
    for directory in directories:
        for folder, _, files in os.walk(directory):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in (Path(folder) / "cgroup.procs").read_text().split())
    return pids


def pids_mentioning(text: str) -> set[int]:
    """Processes whose command line mentions text (the node's containerd socket path is
    in every shim's)."""
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text.encode() in (entry / "cmdline").read_bytes():
                pids.add(int(entry.name))
    return pids


def kill_all(pids: set[int], timeout: float = 10.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        for pid in pids:  # reap our own children
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)


def remove_cgroups(directories: list[Path]) -> None:
    """rmdir each cgroup tree leaf first (cgroup folders only go with rmdir)."""
    for directory in directories:
        # Bottom-up, and a folder that vanished meanwhile is no error.
        for folder, _, _ in os.walk(directory, topdown=False):
            with contextlib.suppress(OSError):
                Path(folder).rmdir()


# Where containerd 1.6, libcni and the kubelet write outside any folder they are given:
# shim sockets and fifos, the CNI result cache, the device-plugin socket folder and the
# container log links. Whatever of these a node created is removed again by `down`.
MACHINE_PATHS = (
    Path("/run/containerd"),
    Path("/var/lib/cni"),
    Path("/var/lib/kubelet"),
    Path("/var/log/containers"),
)


def missing_machine_paths() -> list[str]:
    """The machine paths that do not exist yet (recorded before a node starts)."""
    return [str(path) for path in MACHINE_PATHS if not path.exists()]


def _stale_socket(path: Path) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return True
        except OSError:
            return False
    return False


def remove_machine_leftovers(node_root: Path, network: str, created: list[str]) -> list[Path]:
    """Remove what this node left in the machine paths: its container log links, its
    network's and its sandboxes' loopback CNI results, shim and device-plugin sockets
    nobody listens on; then each machine path the node created, when nothing else is in
    it. The paths removed."""
    removed: list[Path] = []
    logs = Path("/var/log/containers")
    for link in logs.glob("*.log") if logs.is_dir() else []:
        with contextlib.suppress(OSError):
            if link.is_symlink() and str(Path(os.readlink(link))).startswith(str(node_root)):
                link.unlink()
                removed.append(link)
    results = Path("/var/lib/cni/results")
    # The pod network's results, and the loopback plugin's of this node's sandboxes
    # (named by the container ids whose task folders the node's containerd keeps).
    tasks = node_root / "containerd" / "state" / "io.containerd.runtime.v2.task" / "k8s.io"
    sandboxes = {p.name for p in tasks.iterdir()} if tasks.is_dir() else set()
    loopbacks = [f"cni-loopback-{sandbox}-lo" for sandbox in sandboxes]
    found = [*results.glob(f"{network}-*"), *(results / name for name in loopbacks)]
    for entry in found if results.is_dir() else []:
        if entry.exists():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    # Sockets nobody listens on: containerd's shims, the kubelet's device-plugin socket.
    for folder in (Path("/run/containerd/s"), Path("/var/lib/kubelet/device-plugins")):
        for entry in folder.iterdir() if folder.is_dir() else []:
            if entry.is_socket() and _stale_socket(entry):
                entry.unlink(missing_ok=True)
                removed.append(entry)
    for top in map(Path, created):
        if not top.is_dir():
            continue
        folders = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts))
        for folder in [*reversed(folders), top]:
            with contextlib.suppress(OSError):  # not empty: something else uses it
                folder.rmdir()
                removed.append(folder)
    return removed
