"""Runs Argo Workflows' workflow controller against an embedded cluster, on loopback (it
only talks to the API server through the cluster's kubeconfig; its metrics server is off
and its healthz server is on an ephemeral loopback port, see :mod:`.build`), after
installing Argo's full CRDs from the module. No argo-server, UI or executor image: with no
kubelet here, the pods it creates stay Pending unless a test plays the kubelet.

Local tests only (security flaws are reported for the pinned release; never shipped).
Called by tests/operator/test_argo_cluster.py.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bertops.cluster.argo_workflows.build import (
    ARGO_VERSION,
    controller_path,
    crds_dir,
    ensure_argo_workflows,
)
from bertops.cluster.controlplane.processes import alive, spawn, terminate

NAMESPACE = "argo"
FIELD_MANAGER = "bertops-argo-workflows"
# Never pulled here (no kubelet); the tag the controller would run pods with.
EXECUTOR_IMAGE = f"quay.io/argoproj/argoexec:v{ARGO_VERSION}"


def crd_documents() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted(crds_dir().glob("argoproj.io_*.yaml"))]


def config_objects() -> list[dict[str, Any]]:
    """The controller's namespace and ConfigMap: no metrics or telemetry servers."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "workflow-controller-configmap", "namespace": NAMESPACE},
            "data": {"metricsConfig": "enabled: false\n", "telemetryConfig": "enabled: false\n"},
        },
    ]


def apply(kubeconfig: Path, docs: list[dict[str, Any]]) -> None:
    """Server-side apply each document (the CRDs are too big for client-side apply)."""
    from kubernetes import config, dynamic

    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        client = dynamic.DynamicClient(api_client)
        for doc in docs:
            resource = client.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            resource.server_side_apply(
                body=doc,
                namespace=doc["metadata"].get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )
    finally:
        api_client.close()


def install_crds(kubeconfig: Path, timeout: float = 60.0) -> None:
    """Argo's full CRDs, waiting until the Workflow kind is served."""
    apply(kubeconfig, crd_documents())
    from kubernetes import config, dynamic

    deadline = time.monotonic() + timeout
    while True:
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        try:
            dynamic.DynamicClient(api_client).resources.get(
                api_version="argoproj.io/v1alpha1", kind="Workflow"
            )
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        finally:
            api_client.close()


@dataclass
class WorkflowController:
    kubeconfig: Path
    directory: Path
    pid: int | None = field(default=None)

    @property
    def log(self) -> Path:
        return self.directory / "workflow-controller.log"

    def up(self) -> None:
        ensure_argo_workflows()
        install_crds(self.kubeconfig)
        apply(self.kubeconfig, config_objects())
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [
            str(controller_path()),
            "--kubeconfig",
            str(self.kubeconfig),
            "--namespace",
            NAMESPACE,
            "--executor-image",
            EXECUTOR_IMAGE,
        ]
        old = os.environ.get("LEADER_ELECTION_DISABLE")
        os.environ["LEADER_ELECTION_DISABLE"] = "true"  # one controller: no Lease needed
        try:
            self.pid = spawn(argv, self.log)
        finally:
            if old is None:
                os.environ.pop("LEADER_ELECTION_DISABLE", None)
            else:
                os.environ["LEADER_ELECTION_DISABLE"] = old

    def running(self) -> bool:
        return alive(self.pid, "workflow-controller")

    def down(self) -> None:
        if self.pid is not None:
            terminate(self.pid, "workflow-controller", timeout=10.0)
            self.pid = None
