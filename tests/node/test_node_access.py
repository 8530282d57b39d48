"""The node as any cluster's: a pod with in-cluster config (its ServiceAccount token and
the cluster CA) reaches the API server at the ``kubernetes`` Service and gets exactly
what its RBAC allows; ``kubectl logs``, ``exec`` and ``port-forward`` reach the kubelet
through the API server's egress relay; the kubelet's API authenticates and authorizes
every caller through the API server; and each node component acts as its own user,
never the admin. Real kubelet, containerd, kube-proxy and API server throughout."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
OPERATOR_IMAGE = "ghcr.io/bertops/bertops-operator:0.1.0"  # has python and the client
IN_CLUSTER_SCRIPT = """
from kubernetes import client, config
import os, time
config.load_incluster_config()
core = client.CoreV1Api()
namespace = os.environ["NAMESPACE"]
print("pods:", sorted(p.metadata.name for p in core.list_namespaced_pod(namespace).items))
try:
    core.list_namespaced_secret(namespace)
    print("secrets: allowed")
except client.ApiException as error:
    print("secrets:", error.status)
print("done", flush=True)
time.sleep(600)
"""


def kubectl_binary() -> str:
    from bertops.cluster.node.build import ensure_node_binaries

    return str(ensure_node_binaries(lambda message: None).kubectl)


def kubectl(
    cluster: Any, *args: str, netns: str | None = None, kubeconfig: str = "", check: bool = True
) -> str:
    """The cached kubectl (the API server's version), as the admin unless kubeconfig says
    otherwise, inside the node's network namespace when netns names it."""
    from bertops.cluster.node.netns import enter_argv

    binary = kubectl_binary()
    prefix = enter_argv(netns) if netns else []
    config = kubeconfig or str(cluster.kubeconfig)
    proc = subprocess.run(
        [*prefix, binary, f"--kubeconfig={config}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 or not check, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


@pytest.fixture
def namespace_on_node(node_kube: Any) -> Iterator[str]:
    name = f"access-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(node_kube)
    core.create_namespace(client.V1Namespace(metadata={"name": name}))
    yield name
    core.delete_namespace(name)


def pod(name: str, namespace: str, command: list[str], env: dict[str, str]) -> Any:
    """A plain dict body, as the operator sends them: the client validates it into a V1Pod."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": OPERATOR_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "env": [{"name": k, "value": v} for k, v in env.items()],
                }
            ],
        },
    }


def running(core: Any, namespace: str, name: str) -> bool:
    return bool(core.read_namespaced_pod(name, namespace).status.phase == "Running")


def test_a_pod_uses_in_cluster_config_within_its_rbac_and_kubectl_reaches_it(
    node_cluster: Any, node_kube: Any, namespace_on_node: str
) -> None:
    ns = namespace_on_node
    core = client.CoreV1Api(node_kube)
    rbac = client.RbacAuthorizationV1Api(node_kube)
    role: Any = {
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
    }
    rbac.create_namespaced_role(ns, role)
    binding: Any = {
        "metadata": {"name": "pod-reader"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "pod-reader",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}],
    }
    rbac.create_namespaced_role_binding(ns, binding)
    wait_for(lambda: core.list_namespaced_service_account(ns).items, what="the default SA")
    core.create_namespaced_pod(
        ns, pod("reader", ns, ["python", "-c", IN_CLUSTER_SCRIPT], {"NAMESPACE": ns})
    )
    wait_for(lambda: running(core, ns, "reader"), timeout=120, what="the reader pod running")
    logs = wait_for(
        lambda: "done" in (out := kubectl(node_cluster, "-n", ns, "logs", "reader")) and out,
        timeout=120,
        what="the pod's report, read with kubectl logs",
    )
    assert "pods: ['reader']" in logs, logs
    assert "secrets: 403" in logs, logs
    assert kubectl(node_cluster, "-n", ns, "exec", "reader", "--", "id", "-u").strip() == "1000"


def test_port_forward_reaches_a_pod(
    node_cluster: Any, node_kube: Any, namespace_on_node: str
) -> None:
    ns = namespace_on_node
    core = client.CoreV1Api(node_kube)
    wait_for(lambda: core.list_namespaced_service_account(ns).items, what="the default SA")
    command = ["python", "-m", "http.server", "8080", "--directory", "/etc"]
    core.create_namespaced_pod(ns, pod("web", ns, command, {}))
    wait_for(lambda: running(core, ns, "web"), timeout=120, what="the web pod running")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    forward = subprocess.Popen(
        [
            kubectl_binary(),
            f"--kubeconfig={node_cluster.kubeconfig}",
            "-n",
            ns,
            "port-forward",
            "--address=127.0.0.1",
            "pod/web",
            f"{port}:8080",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def answer() -> int | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=5) as r:
                    return int(r.status)
            except OSError:
                time.sleep(0.5)
                return None

        assert wait_for(answer, timeout=60, what="an answer through port-forward") == 200
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def test_the_kubelet_api_authenticates_and_authorizes_through_the_api_server(
    node_cluster: Any, node_kube: Any, namespace_on_node: str
) -> None:
    from bertops.cluster.node import configs, netns

    ns = namespace_on_node
    core = client.CoreV1Api(node_kube)
    wait_for(lambda: core.list_namespaced_service_account(ns).items, what="the default SA")
    token_request: Any = {"spec": {"expirationSeconds": 600}}
    issued = core.create_namespaced_service_account_token("default", ns, token_request)
    assert issued.status is not None
    token = issued.status.token
    url = f"https://{configs.NODE_IP}:10250/pods"

    def status(bearer: str | None) -> int:
        argv = ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", url]
        if bearer:
            argv += ["-H", f"Authorization: Bearer {bearer}"]
        return int(netns.run_inside(netns.netns_name(node_cluster.name), argv))

    assert status(None) == 401  # anonymous is off
    assert status(token) == 403  # a service account may not read nodes/proxy
    assert status(node_cluster.token()) == 200  # the admin may


def test_each_node_component_is_its_own_user(node_cluster: Any) -> None:
    from bertops.cluster.node import identity, netns

    admin = node_cluster.token()
    node_dir = node_cluster.directory / "node"
    seen = set()
    for component in identity.COMPONENTS:
        kubeconfig = node_dir / f"{component}.kubeconfig"
        assert admin not in kubeconfig.read_text(), component
        inside = component not in ("kube-controller-manager", "kube-scheduler")
        review = json.loads(
            kubectl(
                node_cluster,
                "auth",
                "whoami",
                "-o",
                "json",
                kubeconfig=str(kubeconfig),
                netns=netns.netns_name(node_cluster.name) if inside else None,
            )
        )
        user = review["status"]["userInfo"]
        expected_user, expected_groups = identity.user_of(component, node_cluster.name)
        assert user["username"] == expected_user
        assert set(expected_groups) <= set(user.get("groups", []))
        seen.add(user["username"])
    assert len(seen) == len(identity.COMPONENTS)
    # The Node authorizer confines the kubelet to what its own pods need.
    kubelet = str(node_dir / "kubelet.kubeconfig")
    answer = kubectl(
        node_cluster,
        "auth",
        "can-i",
        "list",
        "secrets",
        "--all-namespaces",
        kubeconfig=kubelet,
        netns=netns.netns_name(node_cluster.name),
        check=False,
    )
    assert answer.startswith("no"), answer
    assert os.stat(kubelet).st_mode & 0o077 == 0
