"""The e2e fixtures on a real node: a cluster of its own with kubelet, containerd,
controllers, kube-proxy and CoreDNS (bertops.cluster.node), the local images loaded, and
an artifact volume that pods and the operator see at the same path.

The node starts when this machine can run it (root, Debian's containerd, runc, CNI
plugins and nsenter present); otherwise these tests are skipped with the reason. A node
that should start and does not is an error, never a skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import say_to_terminal

NEEDED = ("containerd", "ctr", "runc", "nsenter", "ip", "iptables")


def node_prerequisites() -> str | None:
    """Why a node cannot start here, or None."""
    if os.geteuid() != 0:
        return "a node needs root (containerd, network namespaces, mounts)"
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install containerd runc iptables)"
    if not Path("/usr/lib/cni/bridge").exists():
        return "missing the CNI plugins (apt-get install containernetworking-plugins)"
    return None


# Module scope: the node stops when its tests are done, not idling through the rest.
@pytest.fixture(scope="module")
def node_cluster(bertops_home: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    reason = node_prerequisites()
    if reason:
        pytest.skip(reason)
    from bertops.cluster.controlplane import Cluster, ClusterError

    reuse = os.environ.get("BERTOPS_E2E_HOME")
    if reuse:
        # Iterating on these tests: a running `bertops cluster up --node --name NAME`
        # (BERTOPS_E2E_NAME, default e2e) in BERTOPS_E2E_HOME, kept between runs, so its
        # images are loaded once.
        name = os.environ.get("BERTOPS_E2E_NAME", "e2e")
        existing = Cluster(name)
        if not (Path(reuse) / "clusters" / name / "node" / "node.json").exists():
            pytest.fail(f"no node cluster {name!r} in {reuse}")
        os.environ["BERTOPS_HOME"] = reuse
        yield existing
        os.environ["BERTOPS_HOME"] = str(bertops_home)
        return

    from bertops.cluster.node import cleanup

    absent_before = cleanup.missing_machine_paths()
    # containerd's sockets live in the node's folder, and a unix socket path has at most
    # 104 bytes: pytest's (per-worker) temporary folders are too deep for them.
    short_home = Path(tempfile.mkdtemp(prefix="bertops-e2e-"))
    os.environ["BERTOPS_HOME"] = str(short_home)
    lines: list[str] = []
    handle = Cluster(f"node-{os.getpid()}", progress=lines.append)
    started = time.monotonic()
    try:
        try:
            handle.up(node=True)
        except ClusterError as error:
            # As the session's cluster fixture does: a kube-apiserver that died with an
            # empty log during one CI start is retried once, and the first error is shown.
            say_to_terminal(request, f"[tests/node] first node start failed: {error}")
            handle.up(node=True)
    except BaseException:
        print("\n".join(lines))
        os.environ["BERTOPS_HOME"] = str(bertops_home)
        raise
    # Straight to the terminal (not captured), so every CI log shows what the node costs.
    report = f"node started in {time.monotonic() - started:.1f}s: " + "; ".join(lines[-4:])
    say_to_terminal(request, f"[tests/node] {report}")
    yield handle
    node_dir = handle.directory / "node"
    before_down = node_dir.resolve()
    try:
        handle.down(purge=True)
        assert_nothing_left(handle.name, before_down, absent_before)
    finally:
        os.environ["BERTOPS_HOME"] = str(bertops_home)
        shutil.rmtree(short_home, ignore_errors=True)


def assert_nothing_left(name: str, node_dir: Path, absent_before: list[str]) -> None:
    """What `down` promises: no process, mount, network namespace, cgroup or machine
    path of the node is left."""
    from bertops.cluster import mounts
    from bertops.cluster.node import cleanup, netns

    left = {
        "network namespace": netns.exists(netns.netns_name(name)),
        "mounts": mounts.mounts_under(node_dir),
        "processes": sorted(cleanup.pids_mentioning(str(node_dir) + "/")),
        "cgroups": cleanup.cgroup_dirs(f"/bertops-{name}"),
        "node folder": node_dir.exists(),
        "machine paths": [p for p in absent_before if Path(p).exists()],
    }
    assert not any(left.values()), f"the node left behind: {left}"


@pytest.fixture(scope="module")
def node_kube(node_cluster: Any) -> Iterator[Any]:
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=str(node_cluster.kubeconfig))
    yield api_client
    api_client.close()
