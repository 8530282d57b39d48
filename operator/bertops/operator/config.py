"""Operator settings: which runtime runs steps, where artifacts live, how often to poll.

Built once by ``bertops operator`` from flags and environment (``BERTOPS_*``) and passed
to the reconcilers; tests build one directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bertops.api.artifacts import local_path

RuntimeName = Literal["local", "kubernetes"]


def _default_state_dir() -> Path:
    return Path(os.environ.get("BERTOPS_HOME", Path.home() / ".bertops")) / "operator"


@dataclass(frozen=True)
class OperatorConfig:
    runtime: RuntimeName = "local"
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    # Root of the artifact store as the *steps* see it (a path on a PVC, or s3://...).
    artifact_root: str = field(
        default_factory=lambda: os.environ.get(
            "BERTOPS_ARTIFACT_ROOT", str(_default_state_dir() / "artifacts")
        )
    )
    # Local runtime: where step folders (spec, logs, pid, result) live.
    state_dir: Path = field(default_factory=_default_state_dir)
    poll_seconds: float = 2.0
    metrics_port: int = 0  # 0: no metrics endpoint
    metrics_address: str = "127.0.0.1"  # the operator image sets 0.0.0.0 for Prometheus
    # Kubernetes runtime.
    image: str = "ghcr.io/bertops/bertops-trainer:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    artifact_pvc: str = "bertops-artifacts"
    artifact_mount: str = "/artifacts"
    # With the artifact root in an object store, pods mount no volume: they take the
    # store's endpoint and credentials from this ConfigMap and Secret of their own
    # namespace (both optional: workload identity needs neither).
    artifact_store_env: str = "bertops-artifacts-s3"
    service_account: str = "bertops-step"
    # A step's Job fails once it has run this long (a hung rank never holds a node for
    # ever), and its /tmp (tokenizer caches, ONNX exports) may use at most this much.
    step_deadline_seconds: int = 24 * 3600
    step_tmp_size: str = "8Gi"
    # Both runtimes: a step that fails with exit code 1 or 3 is started again (a new step,
    # "-a<n>") after base * 2^(n-1) seconds, capped, at most step_max_attempts in all.
    step_max_attempts: int = 3
    step_retry_base_seconds: float = 10.0
    step_retry_max_seconds: float = 300.0
    # Local runtime: the command that runs a step (the same CLI a Job runs).
    step_command: tuple[str, ...] = ("bertops", "trainer")
    # High availability: only the holder of this coordination.k8s.io Lease reconciles, so
    # two replicas (e.g. during a rolling update) never both act. Namespace "": the first
    # watched namespace, else the operator pod's own, else "default".
    leader_election: bool = True
    lease_name: str = "bertops-operator"
    lease_namespace: str = ""
    lease_duration_seconds: float = 15.0  # a standby takes over after this much silence
    lease_renew_deadline_seconds: float = 10.0  # the leader stops acting after this
    lease_retry_seconds: float = 2.0
    # URIs a custom resource may name (bertops.operator.uris): paths only under the
    # artifact root or these prefixes, since a local step runs as the operator and must not
    # read its kubeconfig or token; remote URIs only with these schemes (or a prefix).
    allowed_uri_prefixes: tuple[str, ...] = ()
    allowed_uri_schemes: tuple[str, ...] = ("https", "s3", "gs", "gcs", "az", "abfs")
    allow_loopback_http: bool = False
    # BertDeployment serving. Local runtime: the command that runs the model server and
    # the gateway (the same CLI the serving pods run); a retired server is stopped this
    # long after the gateway stopped sending it requests (its in-flight ones finish).
    serve_command: tuple[str, ...] = ("bertops", "server")
    serving_drain_seconds: float = 2.0
    serving_image: str = "ghcr.io/bertops/bertops-server:0.1.0"
    # Rollout analysis from a Prometheus server instead of scraping the gateway ("": scrape).
    prometheus_url: str = ""

    @property
    def remote_store(self) -> bool:
        """Whether the artifact root is in an object store (an ``s3://``-like URI) rather
        than a path on a volume the pods mount."""
        return local_path(self.artifact_root) is None

    def artifact_uri(self, namespace: str, *parts: str) -> str:
        return "/".join([self.artifact_root.rstrip("/"), namespace, *parts])
