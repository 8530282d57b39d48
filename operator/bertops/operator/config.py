"""Operator settings: which runtime runs steps, where artifacts live, how often to poll.

Built once by ``bertops operator`` from flags and environment (``BERTOPS_*``) and passed
to the reconcilers; tests build one directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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
    # Kubernetes runtime.
    image: str = "ghcr.io/bertops/bertops-trainer:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    artifact_pvc: str = "bertops-artifacts"
    artifact_mount: str = "/artifacts"
    service_account: str = "bertops-step"
    step_backoff_limit: int = 2
    # Local runtime: the command that runs a step (the same CLI a Job runs).
    step_command: tuple[str, ...] = ("bertops", "trainer")

    def artifact_uri(self, namespace: str, *parts: str) -> str:
        return "/".join([self.artifact_root.rstrip("/"), namespace, *parts])
