"""From Git to pods: Argo CD (built from its Go module) syncs two Applications from a
local Git repository into the embedded cluster's real node: the operator overlay (CRDs,
RBAC, the operator Deployment with the kubernetes runtime, 2 replicas and leader
election) and a tiny app (dataset, training, deployment with drift and retraining). The
operator pod does the rest: prepare and training Jobs, the model server and gateway
Deployments, reference and drift Jobs. Shifted traffic with feedback labels, sent to the
gateway Service from inside the node's network namespace, makes a drift check find drift;
exactly one retraining runs in pods, its model rolls out as a canary, the leading
operator pod is deleted mid-rollout, the standby finishes it and promotes the model, and
a steady client sees 0 failed requests. Argo CD syncs each app once and the user's
objects keep their generation: no sync loop, no spec writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from kubernetes import client

from bertops.api.kinds import GROUP, VERSION
from bertops.cluster import gitops_repo
from bertops.cluster.gitops_repo import LocalRepo
from bertops.operator.kube import Kube
from tests.node.test_node_e2e import name_of
from tests.operator.serving_helpers import SteadyClient, feedback_credentials
from tests.operator.test_drift_loop import deployment as drift_deployment
from tests.operator.test_drift_loop import send_shifted
from tests.operator.test_local_runtime import dataset, training
from tests.waiting import condition_of as condition
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.e2e]
__all__ = ["tweets_csv"]
from tests.operator.test_local_runtime import tweets_csv  # noqa: E402  (module fixture)

NS = "loop"
OPERATOR_NS = "bertops-system"
STEP_UID = 1000
ARGO = ("argoproj.io", "v1alpha1")


@pytest.fixture(scope="module")
def argocd_on_node(node_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from bertops.cluster.argocd.build import cached_binary
    from bertops.cluster.argocd.run import ArgoCD

    if cached_binary() is None:
        pytest.skip("argocd is not built: run `bertops cluster argocd build` (about 8 min)")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server missing: apt-get install redis-server (.ci/run does)")
    argo = ArgoCD(kubeconfig=node_cluster.kubeconfig, directory=tmp_path_factory.mktemp("argocd"))
    argo.up()
    yield argo
    argo.down()


def tiny_app(artifacts: Path) -> list[dict[str, Any]]:
    """The app as a user commits it: namespace, tenant plumbing, the three objects."""
    csv = Path("/artifacts") / NS / "data" / "tweets.csv"
    spec = drift_deployment(NS)
    # Long enough a pause for the test to delete the leading operator pod mid-rollout.
    spec["spec"]["rollout"]["steps"] = [{"weight": 50, "pauseSeconds": 30}]
    # The node has 2 CPUs: a stable and a canary replica, the drift check and a retraining
    # Job fit beside the operator and gateway pods.
    spec["spec"]["serving"]["resources"] = {"cpu": "250m", "memory": "2Gi"}
    train = training(NS, epochs=1)
    train["spec"]["resources"] = {"cpu": "500m", "memory": "2Gi"}
    objects = [dataset(NS, csv), train, spec]
    for obj in objects:
        obj["metadata"]["annotations"] = {
            "argocd.argoproj.io/sync-wave": "1",
            "argocd.argoproj.io/sync-options": "SkipDryRunOnMissingResource=true",
        }
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    return [namespace, gitops_repo.artifact_volume(NS, artifacts), *objects]


@pytest.fixture(scope="module")
def labeler(node_kube: Any) -> dict[str, str]:
    """The feedback client's header. Its Secret is made as a user makes one (never from
    Git), before Argo CD syncs the app, so the gateway pods mount it from the start."""
    core = client.CoreV1Api(node_kube)
    namespace = client.V1Namespace(metadata=client.V1ObjectMeta(name=NS))
    try:
        core.create_namespace(namespace)
    except client.ApiException as error:
        if error.status != 409:
            raise
    return feedback_credentials(Kube(node_kube), NS)


@pytest.fixture(scope="module")
def synced(
    node_cluster: Any,
    node_kube: Any,
    argocd_on_node: Any,
    labeler: dict[str, str],
    tweets_csv: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[LocalRepo, Path]:
    artifacts = tmp_path_factory.mktemp("node-artifacts")
    data = artifacts / NS / "data"
    data.mkdir(parents=True)
    shutil.copy(tweets_csv, data / "tweets.csv")
    for path in (artifacts, artifacts / NS, data, data / "tweets.csv"):
        os.chown(path, STEP_UID, STEP_UID)
    artifacts.chmod(0o755)

    repo = LocalRepo.create(tmp_path_factory.mktemp("git"))
    repo.write(
        "local/operator/kustomization.yaml",
        [gitops_repo.node_overlay("gitops/operator/overlays/node", artifacts)],
    )
    repo.write("local/apps/tiny/app.yaml", tiny_app(artifacts))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NS,
        "resources": ["app.yaml", "../../../gitops/tenant/base"],
        "patches": [
            {
                "target": {"kind": "PersistentVolumeClaim", "name": "bertops-artifacts"},
                "patch": json.dumps(
                    [{"op": "add", "path": "/spec/volumeName", "value": f"bertops-artifacts-{NS}"}]
                ),
            }
        ],
    }
    repo.write("local/apps/tiny/kustomization.yaml", [kustomization])
    repo.commit("the node's overlays and the tiny app")

    custom = client.CustomObjectsApi(node_kube)
    custom.create_namespaced_custom_object(
        *ARGO, "argocd", "appprojects", gitops_repo.project(repo.url, [OPERATOR_NS, NS])
    )
    for template, overlay, namespace in (
        ("operator", "local/operator", OPERATOR_NS),
        ("sentiment", "local/apps/tiny", NS),
    ):
        app = gitops_repo.application(template, repo.url, overlay, namespace)
        app["metadata"]["name"] = f"bertops-{overlay.rsplit('/', 1)[1]}"
        custom.create_namespaced_custom_object(*ARGO, "argocd", "applications", app)
    return repo, artifacts


def app_state(node_kube: Any, name: str) -> dict[str, Any]:
    app = client.CustomObjectsApi(node_kube).get_namespaced_custom_object(
        *ARGO, "argocd", "applications", name
    )
    status = cast(dict[str, Any], app).get("status", {})  # the client answers ``object``
    return {
        "sync": status.get("sync", {}).get("status"),
        "health": status.get("health", {}).get("status"),
        "syncs": len(status.get("history", [])),
    }


def feedback_on_fresh_connections(endpoint: str, rounds: int, labeler: dict[str, str]) -> list[int]:
    """Predict then feedback, each on its own connection; the feedback statuses."""
    statuses = []
    for i in range(rounds):
        answer = httpx.post(endpoint + "/predict", json={"texts": [f"fresh {i}"]}, timeout=30)
        answer.raise_for_status()
        fed = httpx.post(
            endpoint + "/feedback",
            json={"requestId": answer.headers["x-request-id"], "label": "neutral"},
            headers=labeler,
            timeout=30,
        )
        statuses.append(fed.status_code)
    return statuses


def pod_states(node_kube: Any) -> list[str]:
    """Each pod of the app's namespace: phase, readiness and why a container waits."""
    found = []
    for pod in client.CoreV1Api(node_kube).list_namespaced_pod(NS).items:
        assert pod.metadata is not None and pod.status is not None
        waiting = [
            f"{c.name}:{c.state.waiting.reason}"
            for c in pod.status.container_statuses or []
            if c.state and c.state.waiting
        ]
        ready = [c.ready for c in pod.status.container_statuses or []]
        found.append(f"{pod.metadata.name} {pod.status.phase} ready={ready} {waiting}")
    return found


def user_generations(kube: Kube) -> dict[str, int]:
    return {
        kind: (kube.get(kind, NS, name) or {})["metadata"]["generation"]
        for kind, name in (
            ("BertDataset", "tweets"),
            ("BertTraining", "tiny"),
            ("BertDeployment", "web"),
        )
    }


def leader(node_kube: Any) -> str:
    """The Lease holder's identity (it starts with its pod's name); "" before one."""
    try:
        lease = client.CoordinationV1Api(node_kube).read_namespaced_lease(
            "bertops-operator", OPERATOR_NS
        )
    except client.ApiException as error:
        if error.status == 404:
            return ""
        raise
    assert lease.spec is not None
    return str(lease.spec.holder_identity or "")


def operator_pods(node_kube: Any) -> list[Any]:
    pods = client.CoreV1Api(node_kube).list_namespaced_pod(
        OPERATOR_NS, label_selector="app.kubernetes.io/name=bertops-operator"
    )
    alive = []
    for p in pods.items:
        assert p.metadata is not None
        if p.metadata.deletion_timestamp is None:
            alive.append(p)
    return alive


def test_git_to_pods_drift_retrains_and_promotes_across_a_leader_change(
    node_cluster: Any, node_kube: Any, synced: tuple[LocalRepo, Path], labeler: dict[str, str]
) -> None:
    from bertops.cluster.node.netns import call_inside, netns_name

    kube = Kube(node_kube)
    netns = netns_name(node_cluster.name)

    def status() -> dict[str, Any]:
        return (kube.get("BertDeployment", NS, "web") or {}).get("status") or {}

    wait_for(
        lambda: (
            len([p for p in operator_pods(node_kube) if p.status.phase == "Running"]) == 2
            and leader(node_kube)
        ),
        timeout=300,
        what="two operator pods running, one holding the Lease",
    )
    try:
        ready = wait_for(
            # The reference sample can be ready before the gateway is: wait for both.
            lambda: (
                (s := status()).get("drift", {}).get("referenceModel") == "tiny-v1"
                and s.get("endpoint")
                and s
            ),
            timeout=420,
            what="tiny-v1 serving in pods with its reference sample",
        )
    except AssertionError as error:  # say what the node was doing
        raise AssertionError(
            f"{error}\npods: {pod_states(node_kube)}\nstatus: {status()}"
        ) from None
    generations = user_generations(kube)
    service = client.CoreV1Api(node_kube).read_namespaced_service("web-gateway", NS)
    assert service.spec is not None
    endpoint = f"http://{service.spec.cluster_ip}:8000"
    assert ready["endpoint"] == f"http://web-gateway.{NS}.svc:8000"

    # Two gateway replicas, each taking feedback only for its own answers: a client that
    # opens a new connection for every call still reaches the one that answered.
    # The labeler's credential comes from the Secret the kubelet mounted into each replica;
    # a tenth of the shifted traffic is labelled wrongly by a client without one (401).
    fresh = call_inside(netns, lambda: feedback_on_fresh_connections(endpoint, 12, labeler))
    assert fresh == [200] * 12
    assert call_inside(netns, lambda: send_shifted(endpoint, 70, labeler)) == (63, 7)
    drifted = wait_for(
        lambda: (
            (c := condition(kube.get("BertDeployment", NS, "web"), "Drifted"))
            and c["reason"] == "DriftDetected"
            and status()
        ),
        timeout=240,
        what="Drifted=True from a drift Job",
    )
    assert drifted["drift"]["drifted"] is True
    assert call_inside(netns, lambda: send_shifted(endpoint, 35, labeler)) == (31, 4)

    steady = SteadyClient(endpoint, pause=0.1, netns=netns).start()
    try:
        wait_for(
            lambda: status().get("canaryModel") == "web-retrain-1",
            timeout=600,
            what="web-retrain-1 trained in pods and rolling out as the canary",
        )
        first_leader = leader(node_kube)
        (leading,) = [
            p for p in operator_pods(node_kube) if first_leader.startswith(p.metadata.name)
        ]
        client.CoreV1Api(node_kube).delete_namespaced_pod(leading.metadata.name, OPERATOR_NS)
        wait_for(
            lambda: (holder := leader(node_kube)) and not holder.startswith(leading.metadata.name),
            timeout=60,
            what="the standby operator pod holding the Lease",
        )
        promoted = wait_for(
            lambda: (s := status()).get("stableModel") == "web-retrain-1" and s,
            timeout=600,
            what="web-retrain-1 promoted by the new leader",
        )
    finally:
        steady.stop()

    assert steady.failed == 0, steady.failures[:5]
    assert steady.sent > 50
    assert steady.models["web-retrain-1"] > 0 and steady.models["tiny-v1"] > 0, steady.models
    retrains = promoted["retrains"]
    assert retrains["count"] == 1, retrains
    assert [record["outcome"] for record in retrains["history"]] == ["Promoted"]
    jobs = client.BatchV1Api(node_kube).list_namespaced_job(NS).items
    assert any("drift" in name_of(job) for job in jobs), [name_of(j) for j in jobs]
    assert user_generations(kube) == generations  # the operator never wrote a spec
    for app in ("bertops-operator", "bertops-tiny"):
        state = app_state(node_kube, app)
        assert state["sync"] == "Synced" and state["syncs"] == 1, (app, state)
    custom = client.CustomObjectsApi(node_kube)
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, NS, "bertmodels")
    models = cast(dict[str, Any], listed)["items"]  # the client answers ``object``
    assert {"tiny-v1", "web-retrain-1"} <= {m["metadata"]["name"] for m in models}
    # From outside the cluster, as a user runs it: the gateway's in-cluster name does not
    # resolve here, so its counts come through the API server's Service proxy.
    shown = subprocess.run(
        [sys.executable, "-m", "bertops.cli.main", "rollout", "status", "web", "-n", NS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=dict(os.environ, KUBECONFIG=str(node_cluster.kubeconfig), COLUMNS="160"),
    )
    assert "Traffic through the gateway" in shown.stdout, shown.stdout + shown.stderr
    assert "web-retrain-1" in shown.stdout and "unavailable" not in shown.stdout
