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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bertops.cluster.apply import server_side_apply, wait_served
from bertops.cluster.argo_workflows.build import (
    ARGO_VERSION,
    controller_path,
    crds_dir,
    ensure_argo_workflows,
)
from bertops.cluster.processes import alive, spawn, terminate

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


def install_crds(kubeconfig: Path, timeout: float = 60.0) -> None:
    """Argo's full CRDs, waiting until the Workflow kind is served."""
    server_side_apply(kubeconfig, crd_documents(), FIELD_MANAGER)
    wait_served(kubeconfig, "argoproj.io/v1alpha1", "Workflow", timeout)


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
        server_side_apply(self.kubeconfig, config_objects(), FIELD_MANAGER)
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
