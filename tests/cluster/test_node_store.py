"""The node's shared image store: one node at a time, handed back by down, taken over
from a node that is gone, and never from a node whose containerd still runs."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from bertops.cluster.node import configs, store
from bertops.cluster.processes import alive


def test_one_node_at_a_time_and_back_after_release(tmp_path: Path) -> None:
    shared, first, second = tmp_path / "node-store", tmp_path / "a", tmp_path / "b"
    assert store.claim(first, shared) == shared / "root"
    assert store.claim(first, shared) == shared / "root"  # a restart of the same node
    assert store.claim(second, shared) is None  # just claimed: containerd is on its way
    store.release(second, shared)  # not the owner: changes nothing
    assert store.claim(second, shared) is None
    store.release(first, shared)
    assert store.claim(second, shared) == shared / "root"


def age_claim(shared: Path) -> None:
    owner = json.loads((shared / "owner.json").read_text())
    owner["claimed_at"] -= store.CLAIM_GRACE_SECONDS + 1
    (shared / "owner.json").write_text(json.dumps(owner))


def test_a_gone_node_loses_its_claim_and_a_running_one_keeps_it(tmp_path: Path) -> None:
    shared, first, second = tmp_path / "node-store", tmp_path / "a", tmp_path / "b"
    store.claim(first, shared)
    age_claim(shared)
    assert store.claim(second, shared) == shared / "root"  # a's node never recorded a pid

    # b's containerd runs (a process named containerd, as node.json records it).
    running = subprocess.Popen(["bash", "-c", "exec -a containerd sleep 60"])
    try:
        for _ in range(200):  # until bash has exec'd it under that name
            if alive(running.pid, "containerd"):
                break
            time.sleep(0.01)
        (second / "node").mkdir(parents=True)
        (second / "node/node.json").write_text(json.dumps({"pids": {"containerd": running.pid}}))
        age_claim(shared)
        assert store.claim(first, shared) is None
    finally:
        running.kill()
        running.wait()
    assert store.claim(first, shared) == shared / "root"  # stopped: free again


def test_containerd_roots_in_the_shared_store_and_keeps_its_state_in_the_node(
    tmp_path: Path,
) -> None:
    layout = configs.NodeLayout(tmp_path / "clusters" / "demo", "demo")
    text = configs.containerd_config(layout, tmp_path / "node-store" / "root")
    assert f'root = "{tmp_path / "node-store" / "root"}"' in text
    assert f'state = "{layout.containerd_dir / "state"}"' in text
