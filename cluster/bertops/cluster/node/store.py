"""The node's image store kept between node starts: containerd's root (its content store,
unpacked snapshots and metadata) in the cache (``$BERTOPS_CACHE/node-store``) rather than
in the cluster's folder, so an image whose layers were imported once imports again in
seconds (containerd skips blobs it holds and snapshots it has unpacked), and a source
edit unpacks only the small project layer.

One node uses the store at a time: a node claims it when no other node's containerd runs
on it; a second node started meanwhile gets a root of its own in its cluster folder and
imports everything (as every node did before). Containers of a previous start stay in the
store's metadata as after a machine reboot: containerd's CRI reports them exited and the
kubelet garbage-collects them. Called by :class:`bertops.cluster.node.node.Node`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from pathlib import Path

from bertops.cluster.processes import alive

# A claim younger than this holds even before its containerd is recorded as running.
CLAIM_GRACE_SECONDS = 180.0


def shared_store() -> Path:
    from bertops.cluster.images.build import cache_root

    return cache_root() / "node-store"


@contextlib.contextmanager
def _locked(store: Path) -> Iterator[None]:
    store.parent.mkdir(parents=True, exist_ok=True)
    with (store.parent / f".{store.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def claim(cluster_dir: Path, store: Path | None = None) -> Path | None:
    """Take the shared store for the node of ``cluster_dir``: its path (containerd's
    root), or None when another node's containerd uses it."""
    store = store or shared_store()
    with _locked(store):
        owner = _owner(store)
        if owner and owner["cluster_dir"] != str(cluster_dir) and _in_use(owner):
            return None
        store.mkdir(mode=0o700, parents=True, exist_ok=True)
        record = {"cluster_dir": str(cluster_dir), "claimed_at": time.time()}
        (store / "owner.json").write_text(json.dumps(record))
    return store / "root"


def release(cluster_dir: Path, store: Path | None = None) -> None:
    """Give the store back when ``cluster_dir``'s node holds it (its containerd stopped)."""
    store = store or shared_store()
    with _locked(store):
        owner = _owner(store)
        if owner and owner["cluster_dir"] == str(cluster_dir):
            (store / "owner.json").unlink(missing_ok=True)


def _owner(store: Path) -> dict[str, object] | None:
    try:
        owner = json.loads((store / "owner.json").read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and "cluster_dir" in owner else None


def _in_use(owner: dict[str, object]) -> bool:
    """Whether the owning node's containerd runs, or its claim is too young to tell."""
    claimed_at = owner.get("claimed_at")
    if isinstance(claimed_at, int | float) and time.time() - claimed_at < CLAIM_GRACE_SECONDS:
        return True
    node_state = Path(str(owner["cluster_dir"])) / "node" / "node.json"
    try:
        pid = json.loads(node_state.read_text()).get("pids", {}).get("containerd")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(pid, int) and alive(pid, "containerd")
