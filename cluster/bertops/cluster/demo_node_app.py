"""What the node demo commits to its Git repository, and how it reads the result back.

- ``local/operator``: gitops/operator/overlays/node with the artifact PersistentVolume
  pointed at the node's artifact folder.
- ``local/apps/sentiment``: gitops/apps/sentiment/base (namespace, tenant plumbing, the
  example resources) plus the node's PersistentVolume and one patch per bertops object
  with ``make demo``'s timings (:func:`bertops.cluster.demo.demo_overrides`) and requests
  that fit a 2-CPU node beside the operator and gateway pods.
- The AppProject and the two Applications (gitops/argocd, pointed at this repository).
- The Secret of feedback clients, made with kubectl before Argo CD syncs (a Secret is
  never committed to Git).

Called by :mod:`bertops.cluster.demo_node`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bertops.cluster import demo_deploy, gitops_repo
from bertops.cluster.demo import example_manifests
from bertops.cluster.demo_timeline import Kubectl
from bertops.cluster.gitops_repo import LocalRepo

APP_NS = "bertops-demo"  # gitops/apps/sentiment/base's namespace
OPERATOR_NS = "bertops-system"
APP_DIR = "local/apps/sentiment"
APP_KUSTOMIZATION = f"{APP_DIR}/kustomization.yaml"
DATA_URI = f"/artifacts/{APP_NS}/data/sentiment.csv"  # the base's dataset URI
GATEWAY_PORT = 8000
# Requests sized for 2 CPUs: two operator pods (100m each) and two gateways (250m each)
# leave room for a stable and a canary server, a drift check and a 2-rank retraining.
NODE_SIZES: dict[str, dict[str, Any]] = {
    "BertTraining": {"resources": {"cpu": "400m", "memory": "3Gi"}},
    "BertDeployment": {"serving": {"resources": {"cpu": "250m", "memory": "2Gi"}}},
}


def example_docs(epochs: int = 2) -> list[dict[str, Any]]:
    """The example resources as the demo runs them, sized for the node."""
    docs = example_manifests(Path(DATA_URI), epochs, replicas=2)
    for doc in docs:
        merge(doc["spec"], NODE_SIZES.get(doc["kind"], {}))
    return docs


def merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def app_kustomization(epochs: int) -> dict[str, Any]:
    """The base, the node's volume, and each object's spec as ``make demo`` runs it: a
    JSON patch replacing the whole spec (a merge would keep the base's production
    settings, such as its stricter maxErrorRate, beside the demo's)."""
    patches: list[dict[str, Any]] = [
        {
            "target": {"kind": "PersistentVolumeClaim", "name": "bertops-artifacts"},
            "patch": json.dumps(
                [{"op": "add", "path": "/spec/volumeName", "value": f"bertops-artifacts-{APP_NS}"}]
            ),
        }
    ]
    for doc in example_docs(epochs):
        patches.append(
            {
                "target": {"kind": doc["kind"], "name": doc["metadata"]["name"]},
                "patch": yaml.safe_dump(
                    [{"op": "replace", "path": "/spec", "value": doc["spec"]}], sort_keys=False
                ),
            }
        )
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["../../../gitops/apps/sentiment/base", "pv.yaml"],
        "patches": patches,
    }


def write(repo: LocalRepo, artifacts: Path, epochs: int) -> None:
    repo.write(
        "local/operator/kustomization.yaml",
        [gitops_repo.node_overlay("gitops/operator/overlays/node", artifacts)],
    )
    repo.write(f"{APP_DIR}/pv.yaml", [gitops_repo.artifact_volume(APP_NS, artifacts)])
    repo.write(APP_KUSTOMIZATION, [app_kustomization(epochs)])


def argocd_objects(repo_url: str) -> str:
    """The AppProject and the two Applications, as YAML for ``kubectl apply``."""
    docs = [gitops_repo.project(repo_url, [OPERATOR_NS, APP_NS])]
    for template, path, namespace in (
        ("operator", "local/operator", OPERATOR_NS),
        ("sentiment", APP_DIR, APP_NS),
    ):
        docs.append(gitops_repo.application(template, repo_url, path, namespace))
    return yaml.safe_dump_all(docs)


def set_replicas(replicas: int) -> Callable[[dict[str, Any]], None]:
    """An edit of the app's kustomization: the BertDeployment's server replicas."""

    def change(kustomization: dict[str, Any]) -> None:
        for patch in kustomization["patches"]:
            if patch["target"]["kind"] == "BertDeployment":
                (operation,) = yaml.safe_load(patch["patch"])
                operation["value"]["serving"]["replicas"] = replicas
                patch["patch"] = yaml.safe_dump([operation], sort_keys=False)
                return
        raise ValueError("the app's kustomization has no BertDeployment patch")

    return change


def feedback_secret(kubectl: Kubectl) -> None:
    """The app's namespace and the Secret of feedback clients its deployment names (made
    by hand, as Secrets are: never committed to Git)."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP_NS}}
    kubectl("apply", "-f", "-", stdin=json.dumps(namespace))
    demo_deploy.feedback_secret(kubectl, _deployment())


def labeler_token(kubectl: Kubectl) -> str | None:
    """The demo labeler's token, read back from that Secret."""
    name = _deployment()["spec"]["serving"].get("feedback", {}).get("credentialsSecret")
    if not name:
        return None
    secret = json.loads(kubectl("get", "secret", name, "-o", "json"))
    return base64.b64decode(secret["data"]["labeler"]).decode()


def _deployment() -> dict[str, Any]:
    (deployment,) = [d for d in example_docs() if d["kind"] == "BertDeployment"]
    return deployment


def gateway_address(kubectl: Kubectl) -> str:
    """The gateway Service's ClusterIP URL (reachable inside the node's namespace)."""
    service = json.loads(kubectl("get", "service", "sentiment-gateway", "-o", "json"))
    return f"http://{service['spec']['clusterIP']}:{GATEWAY_PORT}"


def generations(kubectl: Kubectl) -> dict[str, int]:
    """metadata.generation of each object the user committed."""
    found = {}
    for doc in example_docs():
        kind, name = doc["kind"], doc["metadata"]["name"]
        text = kubectl("get", kind.lower(), name, "-o", "json", "--ignore-not-found")
        found[f"{kind}/{name}"] = json.loads(text)["metadata"]["generation"] if text else 0
    return found


def server_replicas(kubectl: Kubectl, model: str) -> int:
    """Ready replicas of the model server Deployment of ``model``."""
    text = kubectl(
        "get", "deployments", "-l",
        f"bertops.io/model={model},app.kubernetes.io/component=model-server", "-o", "json",
    )  # fmt: skip
    items = json.loads(text).get("items", [])
    return sum((d.get("status") or {}).get("readyReplicas") or 0 for d in items)
