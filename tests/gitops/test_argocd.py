"""A real Argo CD (built from its Go module, see bertops.cluster.argocd) syncing bertops
from a ``file://`` Git repository into the embedded cluster, with our health Lua:
the sentiment app reaches Synced + Healthy (the test plays the PV binder and writes the
status documents the operator writes); a paused rollout shows Suspended; a BertModel the
operator creates leaves the app Synced and is never pruned; a commit changing a
BertTraining's hyper-parameters is synced, and the real operator starts the new run.

Skipped unless argocd is built (`bertops cluster argocd build`, about 8 minutes) and
redis-server is installed, so `make test` never compiles Argo CD."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from bertops.api.kinds import GROUP, VERSION, kind_info
from tests.gitops import argo_helpers as h
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ARGO = ("argoproj.io", "v1alpha1")
NS = h.NAMESPACE
OURS = {
    "BertDataset": "sentiment-tweets",
    "BertTraining": "sentiment-minilm-v1",
    "BertModel": "sentiment-minilm-v1-int8",
    "BertDeployment": "sentiment",
}


@pytest.fixture(scope="module")
def argocd(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from bertops.cluster.argocd.build import cached_binary
    from bertops.cluster.argocd.run import ArgoCD

    if cached_binary() is None:
        pytest.skip("argocd is not built: run `bertops cluster argocd build` (about 8 min)")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server missing: apt-get install redis-server (.ci/run does)")
    argo = ArgoCD(kubeconfig=cluster.kubeconfig, directory=tmp_path_factory.mktemp("argocd"))
    argo.up()
    yield argo
    argo.down()


class App:
    """The Application and the objects it manages, read and written as the admin."""

    def __init__(self, kube: Any, argo: Any) -> None:
        self.custom = client.CustomObjectsApi(kube)
        self.core = client.CoreV1Api(kube)
        self.argo = argo

    def log(self) -> str:
        status = self.get().get("status", {})
        return f"app status: {status.get('sync')} {status.get('health')}\n" + (
            self.argo.log("argocd-application-controller", 3000)
            + self.argo.log("argocd-repo-server", 1500)
        )

    def get(self) -> dict[str, Any]:
        found = self.custom.get_namespaced_custom_object(
            *ARGO, "argocd", "applications", "bertops-sentiment"
        )
        assert isinstance(found, dict)
        return found

    def state(self) -> tuple[str, str, str]:
        status = self.get().get("status", {})
        sync, health = status.get("sync", {}), status.get("health", {})
        return sync.get("status", ""), health.get("status", ""), sync.get("revision", "")

    def resource_health(self, kind: str, name: str) -> dict[str, Any]:
        for res in self.get().get("status", {}).get("resources", []):
            if res["kind"] == kind and res["name"] == name:
                return res.get("health") or {}
        return {}

    def ours(self, kind: str, name: str) -> dict[str, Any]:
        found = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, NS, kind_info(kind).plural, name
        )
        assert isinstance(found, dict)
        return found

    def write_status(self, kind: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, NS, kind_info(kind).plural, name, {"status": status}
        )

    def wait(self, what: str, check: Any, timeout: float = 120) -> Any:
        return wait_for(check, timeout, interval=1, what=what, log=self.log)


def _claim_exists(core: client.CoreV1Api) -> bool:
    claims = core.list_namespaced_persistent_volume_claim(NS).items
    volumes = core.list_persistent_volume(
        field_selector="metadata.name=bertops-artifacts-bertops-demo"
    ).items
    return bool(claims) and bool(volumes)


def bind_volumes(core: client.CoreV1Api) -> None:
    """What the PV controller would do: bind the claim to its volume."""
    core.patch_persistent_volume_status(
        "bertops-artifacts-bertops-demo", {"status": {"phase": "Bound"}}
    )
    core.patch_namespaced_persistent_volume_claim_status(
        "bertops-artifacts",
        NS,
        {
            "status": {
                "phase": "Bound",
                "accessModes": ["ReadWriteMany"],
                "capacity": {"storage": "20Gi"},
            }
        },
    )


@pytest.fixture(scope="module")
def synced(kube: Any, argocd: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[App, Path]:
    repo = h.make_repo(tmp_path_factory.mktemp("git"))
    url = f"file://{repo}"
    custom = client.CustomObjectsApi(kube)
    custom.create_namespaced_custom_object(*ARGO, "argocd", "appprojects", h.project(url))
    custom.create_namespaced_custom_object(*ARGO, "argocd", "applications", h.application(url))
    app = App(kube, argocd)
    # Wave 0 (namespace, claim, policies) must be Healthy before wave 1 (our kinds) is
    # applied: play the PV controller as soon as the claim exists.
    app.wait("the artifact claim", lambda: _claim_exists(app.core), timeout=180)
    bind_volumes(app.core)
    app.wait(
        "the first sync",
        lambda: (
            app.state()[0] == "Synced" and app.resource_health("BertDataset", OURS["BertDataset"])
        ),
        timeout=180,
    )
    return app, repo


def test_synced_and_healthy_with_our_health_checks(synced: tuple[App, Path]) -> None:
    app, _ = synced
    health = app.resource_health("BertDataset", OURS["BertDataset"])
    assert health == {
        "status": "Progressing",
        "message": "waiting for the bertops operator to report status",
    }
    bind_volumes(app.core)
    for kind, name in OURS.items():
        generation = app.ours(kind, name)["metadata"]["generation"]
        app.write_status(kind, name, h.operator_status(kind, generation))
    app.wait("Synced + Healthy", lambda: app.state()[:2] == ("Synced", "Healthy"))
    assert app.resource_health("BertDataset", OURS["BertDataset"]) == {
        "status": "Healthy",
        "message": "Prepared: 900 rows prepared",
    }
    assert (
        app.resource_health("BertDeployment", "sentiment")["message"]
        == "Serving: serving sentiment-minilm-v1"
    )


def test_a_paused_rollout_is_suspended(synced: tuple[App, Path]) -> None:
    app, _ = synced
    generation = app.ours("BertDeployment", "sentiment")["metadata"]["generation"]
    app.write_status("BertDeployment", "sentiment", h.paused(generation))
    app.wait(
        "Suspended",
        lambda: app.resource_health("BertDeployment", "sentiment").get("status") == "Suspended",
    )
    assert (
        app.resource_health("BertDeployment", "sentiment")["message"]
        == "RolloutPaused: rollout paused; analysis continues"
    )
    app.wait("app Suspended", lambda: app.state()[1] == "Suspended")
    app.write_status("BertDeployment", "sentiment", h.operator_status("BertDeployment", generation))
    app.wait("Healthy again", lambda: app.state()[:2] == ("Synced", "Healthy"))


def operator_model(training: dict[str, Any]) -> dict[str, Any]:
    """The BertModel the operator registers for a finished training (planners/training.py)."""
    meta = training["metadata"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BertModel",
        "metadata": {
            "name": "sentiment-minilm-v1",
            "namespace": NS,
            "labels": {
                "app.kubernetes.io/part-of": "bertops",
                "bertops.io/training": meta["name"],
                "bertops.io/family": "sentiment",
            },
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "BertTraining",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"family": "sentiment", "trainingRef": {"name": meta["name"]}},
    }


@pytest.fixture(scope="module")
def operator(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The real operator (kubernetes runtime) watching the app's namespace."""
    home = tmp_path_factory.mktemp("operator")
    log = home / "operator.log"
    cmd = [
        str(Path(sys.executable).parent / "bertops"),
        "operator",
        "--runtime=kubernetes",
        f"--namespace={NS}",
        "--no-leader-elect",
        "--metrics-port=0",
        "--poll=0.5",
        f"--kubeconfig={cluster.kubeconfig}",
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "BERTOPS_HOME": str(home)}
        )
    yield log
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def test_operator_objects_and_a_hyperparameter_commit(
    synced: tuple[App, Path], operator: Path
) -> None:
    app, repo = synced
    training = app.ours("BertTraining", OURS["BertTraining"])
    app.custom.create_namespaced_custom_object(
        GROUP, VERSION, NS, "bertmodels", operator_model(training)
    )
    # A commit (the hyper-parameters) makes Argo CD sync, with prune: the operator's
    # BertModel is not in Git and must survive it, and the app must end Synced.
    revision = h.commit(
        repo,
        "gitops/examples/sentiment/training.yaml",
        lambda doc: doc["spec"]["hyperparameters"].update(learningRate=3.0e-5),
        "sentiment: learning rate 3e-5",
    )
    app.custom.patch_namespaced_custom_object(
        *ARGO,
        "argocd",
        "applications",
        "bertops-sentiment",
        {"metadata": {"annotations": {"argocd.argoproj.io/refresh": "hard"}}},
    )
    app.wait(
        "the commit synced",
        lambda: app.state()[0] == "Synced" and app.state()[2] == revision,
        timeout=180,
    )
    live = app.ours("BertTraining", OURS["BertTraining"])
    assert live["spec"]["hyperparameters"]["learningRate"] == 3.0e-5
    assert live["metadata"]["generation"] == training["metadata"]["generation"] + 1
    assert app.ours("BertModel", "sentiment-minilm-v1")["metadata"]["uid"]  # not pruned

    # The operator sees the new generation and starts a new run (a Job for generation 2).
    def new_run() -> str:
        status = app.ours("BertTraining", OURS["BertTraining"]).get("status", {})
        step = status.get("step") or ""
        return (
            step
            if status.get("observedGeneration") == live["metadata"]["generation"] and "-g2-" in step
            else ""
        )

    step = app.wait("the operator's new run", new_run, timeout=90)
    client.BatchV1Api(app.custom.api_client).read_namespaced_job(step, NS)
    app.wait("Synced with the operator's objects", lambda: app.state()[0] == "Synced", timeout=60)
