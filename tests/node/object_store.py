"""The operator installed on the node the way a team installs it with an object store: the
gitops operator base with the ``artifacts-object-store`` component, in an overlay that sets
this S3 server's endpoint (in Git: the ConfigMap) and artifact root; the key stays out of
Git (the Secret ``bertops-artifacts-s3`` made beside it, as ``bertops cluster storage up``
does). Used by the node e2e test on S3 through the ``operator_on_s3`` fixture
(tests/node/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from bertops.cluster.storage.run import REGION
from tests.gitops.render import GITOPS, render

OPERATOR_NS = "bertops-system"


def object_store_install(
    folder: Path, root: str, endpoint: str, namespace: str
) -> list[dict[str, Any]]:
    """The rendered install: one operator replica watching only ``namespace`` (the node's
    other tests run operators of their own), artifacts at ``root`` on ``endpoint``."""
    folder.mkdir(parents=True, exist_ok=True)
    operator_patch = [
        {"op": "replace", "path": "/spec/template/spec/containers/0/env/1/value", "value": root},
        {
            "op": "add",
            "path": "/spec/template/spec/containers/0/args/-",
            "value": f"--namespace={namespace}",
        },
    ]
    config_patch = [
        {"op": "replace", "path": "/data/AWS_ENDPOINT_URL_S3", "value": endpoint},
        {"op": "replace", "path": "/data/AWS_REGION", "value": REGION},
    ]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(GITOPS / "operator" / "base", folder)],
        "components": [os.path.relpath(GITOPS / "components" / "artifacts-object-store", folder)],
        "patches": [
            {
                "target": {"kind": "Deployment", "name": "bertops-operator"},
                "patch": yaml.safe_dump(operator_patch),
            },
            {
                "target": {"kind": "ConfigMap", "name": "bertops-artifacts-s3"},
                "patch": yaml.safe_dump(config_patch),
            },
        ],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return render(folder)


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "bertops-operator"
    ]
    container: dict[str, Any] = found["spec"]["template"]["spec"]["containers"][0]
    return container


def operator_pods(api: Any) -> list[Any]:
    """The operator's pods, whatever their state."""
    pods = client.CoreV1Api(api).list_namespaced_pod(
        OPERATOR_NS, label_selector="app.kubernetes.io/name=bertops-operator"
    )
    return list(pods.items)


def running_operator_pods(api: Any) -> list[Any]:
    """The operator pods that run and are ready."""
    return [
        p
        for p in operator_pods(api)
        if p.status is not None
        and p.status.phase == "Running"
        and all(c.ready for c in p.status.container_statuses or [])
    ]
