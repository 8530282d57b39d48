"""The node's own network namespace: created with `ip netns add`, given the node's and
the cluster DNS's addresses on its loopback, and deleted again by `down`. Processes run
inside it through `nsenter --net` (only the network namespace: the kubelet and containerd
must share the machine's mount namespace so each sees the other's mounts). A Python
process can open a socket inside it (:func:`inside`) and use it from outside, or run
work on a thread that lives inside it (:func:`call_inside`).

Called by :class:`bertops.cluster.node.node.Node`, :mod:`.forwarder`, the node demo's
traffic (:mod:`bertops.cluster.demo_traffic`) and tests/node.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def netns_name(node_name: str) -> str:
    return f"bertops-{node_name}"


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def _ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")


def create(name: str, addresses: list[str], service_subnet: str) -> None:
    """A fresh namespace with loopback up, each address (a /32) on it (the first is the
    node's), and a route for the Service addresses: a connection from the namespace itself
    (a probe, `nsenter ... curl`) needs one before kube-proxy's OUTPUT rules rewrite it to
    a pod's address."""
    if netns_path(name).exists():
        delete(name)
    _ip("netns", "add", name)
    _ip("link", "set", "lo", "up", netns=name)
    for address in addresses:
        _ip("addr", "add", f"{address}/32", "dev", "lo", netns=name)
    # From the node's own address, never 127.0.0.1, which may not leave loopback.
    _ip("route", "add", service_subnet, "dev", "lo", "src", addresses[0], netns=name)
    # Bridged pod traffic passes iptables, so Service NAT applies to it (per namespace).
    bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if bridge_nf.exists():
        run_inside(name, ["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"])
    run_inside(name, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])


def delete(name: str) -> None:
    """Delete the namespace; its bridge, veths and iptables rules go with it."""
    if netns_path(name).exists():
        _ip("netns", "delete", name)


def exists(name: str) -> bool:
    return netns_path(name).exists()


def enter_argv(name: str) -> list[str]:
    """The prefix that runs a command in the namespace (network only)."""
    return ["nsenter", f"--net={netns_path(name)}", "--"]


def run_inside(name: str, argv: list[str], *, check: bool = True) -> str:
    proc = subprocess.run([*enter_argv(name), *argv], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {name} failed: {proc.stderr.strip()}")
    return proc.stdout


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def move_this_thread(name: str) -> None:
    """Move the calling thread into the namespace for good: for a thread made only to
    talk to Services and pods (a demo's or test's traffic), never the main thread."""
    target = os.open(netns_path(name), os.O_RDONLY)
    try:
        _setns(target)
    finally:
        os.close(target)


def call_inside(name: str, work: Callable[[], T], timeout: float = 3600) -> T:
    """Run work on a new thread moved into the namespace and return its result (or raise
    its exception). Threads that work starts are in the namespace too (a new thread
    shares its creator's namespaces), and so are the sockets they open: how a demo or a
    test talks to Service addresses, which exist only inside."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            move_this_thread(name)
            outcome["value"] = work()
        except BaseException as error:  # handed back to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, name=f"in-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"work inside network namespace {name} still running after {timeout}s")
    if "error" in outcome:
        raise outcome["error"]
    return cast(T, outcome["value"])


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the block with this thread in the namespace; sockets created in it stay there.
    Only for a single-threaded moment (setns moves the calling thread alone)."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns_path(name), os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(target)
        os.close(original)
