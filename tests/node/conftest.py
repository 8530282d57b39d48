"""The e2e fixtures on a real node: a cluster of its own with kubelet, containerd,
controllers, kube-proxy and CoreDNS (bertops.cluster.node), the local images loaded; per
test, a namespace of its own, an artifact volume that pods and the operator see at the
same path, and an operator (kubernetes runtime) watching that namespace.

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
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client

from bertops.operator.config import OperatorConfig
from tests.conftest import say_to_terminal
from tests.operator.conftest import RunningOperator, delete_deployments
from tests.waiting import wait_for

if TYPE_CHECKING:
    from bertops.cluster.storage.run import Storage

NEEDED = ("containerd", "ctr", "runc", "nsenter", "ip", "iptables")
STEP_UID = 1000  # the images' user, and the pods' runAsUser


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


@pytest.fixture
def node_namespace(node_kube: Any) -> Iterator[str]:
    """A namespace per test, deleted afterwards: the node has 2 CPUs, and a test's pods
    left running would keep the next test's pods Pending."""
    import uuid

    name = f"e2e-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(node_kube)
    core.create_namespace(client.V1Namespace(metadata={"name": name}))
    core.create_namespaced_service_account(
        name, client.V1ServiceAccount(metadata={"name": "bertops-step"})
    )
    yield name
    core.delete_namespace(name)
    wait_for(
        lambda: not core.list_namespaced_pod(name).items,
        timeout=120,
        what=f"the pods of namespace {name} gone",
    )


@pytest.fixture
def artifacts(node_kube: Any, node_namespace: str, tmp_path: Path) -> Path:
    """The artifact store's root, as the operator sees it. The namespace's
    `bertops-artifacts` claim binds a hostPath PersistentVolume of its own folder of the
    store, ``<root>/<namespace>`` (as gitops/tenant says), which its pods mount at that
    same path."""
    root = tmp_path / "artifacts"
    tenant = root / node_namespace
    tenant.mkdir(parents=True)
    for folder in (tmp_path, root):
        folder.chmod(0o755)
    os.chown(tenant, STEP_UID, STEP_UID)
    core = client.CoreV1Api(node_kube)
    volume = f"artifacts-{node_namespace}"
    # Plain dict bodies, as the operator sends them: the client validates them into its models.
    persistent_volume: Any = {
        "metadata": {"name": volume},
        "spec": {
            "capacity": {"storage": "5Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(tenant), "type": "Directory"},
        },
    }
    core.create_persistent_volume(persistent_volume)
    claim: Any = {
        "metadata": {"name": "bertops-artifacts"},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": volume,
            "resources": {"requests": {"storage": "5Gi"}},
        },
    }
    core.create_namespaced_persistent_volume_claim(node_namespace, claim)
    return root


@pytest.fixture
def node_operator(
    node_cluster: Any, node_kube: Any, node_namespace: str, artifacts: Path, tmp_path: Path
) -> Iterator[RunningOperator]:
    config = OperatorConfig(
        namespaces=(node_namespace,),
        runtime="kubernetes",
        artifact_root=str(artifacts),
        artifact_mount=str(artifacts),
        allowed_uri_prefixes=(),  # the namespace's own part of the store, nothing else
        state_dir=tmp_path / "state",
        poll_seconds=1.0,
        step_retry_base_seconds=1.0,
    )
    operator = RunningOperator(config, str(node_cluster.kubeconfig))
    try:
        yield operator
        # While the operator runs, so its finalizer lets the deployments go.
        delete_deployments(node_kube, {node_namespace})
    finally:
        operator.stop()


@pytest.fixture
def s3_in_cluster(
    node_cluster: Any, s3_store: Storage, s3_env: dict[str, str], node_namespace: str
) -> Iterator[tuple[str, int]]:
    """The S3 server reachable from the node's pods (the relay and the Service
    ``bertops-s3``: bertops.cluster.storage.node_access), and the namespace's own key,
    allowed only its prefix (bertops.cluster.storage.tenants), handed to it as its Secret
    and ConfigMap ``bertops-artifacts-s3``. The artifact root and the server's port."""
    from bertops.cluster.storage.cluster_objects import hand_over
    from bertops.cluster.storage.node_access import expose, pod_client_env, withdraw
    from bertops.cluster.storage.tenants import Tenants

    port = int(s3_env["AWS_ENDPOINT_URL_S3"].rsplit(":", 1)[1])
    expose(node_cluster.kubeconfig, node_cluster.name, port, s3_store.directory)
    prefix = f"{node_namespace}-store"
    tenant = Tenants(s3_store).client_env(node_namespace, prefix)
    assert tenant["AWS_ACCESS_KEY_ID"] != s3_env["AWS_ACCESS_KEY_ID"]
    hand_over(node_cluster.kubeconfig, node_namespace, pod_client_env(tenant, port))
    try:
        yield f"s3://bertops/{prefix}", port
    finally:
        withdraw(s3_store.directory)


@pytest.fixture
def operator_on_s3(
    node_cluster: Any,
    node_kube: Any,
    node_namespace: str,
    s3_in_cluster: tuple[str, int],
    s3_env: dict[str, str],
    tmp_path: Path,
) -> Iterator[list[dict[str, Any]]]:
    """The operator as a pod, installed from the gitops base with the
    ``artifacts-object-store`` component (tests/node/object_store.py), its root key in the
    Secret beside it; removed afterwards, its deployments first (its finalizer). The
    rendered install."""
    from bertops.cluster.storage.cluster_objects import manifests
    from bertops.cluster.storage.node_access import pod_client_env
    from tests.gitops.render import apply
    from tests.node.object_store import (
        OPERATOR_NS,
        object_store_install,
        running_operator_pods,
    )

    root, port = s3_in_cluster
    env = pod_client_env(s3_env, port)
    docs = object_store_install(
        tmp_path / "install", root, env["AWS_ENDPOINT_URL_S3"], node_namespace
    )
    secret = [d for d in manifests(OPERATOR_NS, env) if d["kind"] == "Secret"]
    apply(node_cluster.kubeconfig, [d for d in docs if d["kind"] == "Namespace"] + secret)
    apply(node_cluster.kubeconfig, [d for d in docs if d["kind"] != "Namespace"])
    wait_for(
        lambda: running_operator_pods(node_kube),
        timeout=180,
        what="the operator pod running from the object-store install",
    )
    apps = client.AppsV1Api(node_kube)
    try:
        yield docs
        delete_deployments(node_kube, {node_namespace})
    finally:
        apps.delete_namespaced_deployment("bertops-operator", OPERATOR_NS)
        wait_for(
            lambda: (
                not client.CoreV1Api(node_kube)
                .list_namespaced_pod(
                    OPERATOR_NS, label_selector="app.kubernetes.io/name=bertops-operator"
                )
                .items
            ),
            timeout=120,
            what="the operator pod gone",
        )
