"""What a serving backend is asked to serve, and what it reports back.

Built by :mod:`bertops.operator.deployment.reconciler` from the rollout status;
consumed by the local (:mod:`.local`) and kubernetes (:mod:`.cluster`) backends. Also
where a deployment's served traffic lands: :func:`predictions_uri` (the model servers'
prediction logs, read by the drift check) and :func:`feedback_uri` (the gateway's
labelled feedback, added to a retraining's dataset), the same folders on both runtimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bertops.api.deployment import BertDeploymentSpec
from bertops.api.routes import Routes
from bertops.operator.config import OperatorConfig
from bertops.operator.deployment.server_manifests import (
    FEEDBACK,
    PREDICTIONS,
    ModelVersion,
    deployment_parts,
)
from bertops.operator.objects import ObjectRef


@dataclass(frozen=True)
class Target:
    """The rollout's wish: stable, and a canary at a weight (percent)."""

    stable: ModelVersion
    canary: ModelVersion | None = None
    weight: int = 0
    sticky: Literal["none", "header", "cookie"] = "none"  # rollout.sticky
    compare: bool = False  # pair the canary's answers with stable's (analysis.paired)
    shadow: bool = False  # the canary only gets mirrored requests (the shadow phase)

    @property
    def models(self) -> list[ModelVersion]:
        return [self.stable] + ([self.canary] if self.canary else [])


@dataclass(frozen=True)
class Served:
    """What serves now. ``routes`` is the table the gateway has applied (None before the
    gateway is up); ``settled`` is False while the backend still waits for something (a
    server to become ready, a retired one to drain), so the reconciler looks again soon."""

    endpoint: str | None
    routes: Routes | None
    settled: bool
    metrics_urls: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)
    metrics_endpoint: str | None = None  # the gateway's metrics listener (status, the CLI)


def predictions_uri(config: OperatorConfig, namespace: str, name: str) -> str:
    """The folder of a deployment's prediction logs (``<server or pod>.jsonl`` and their
    rotations, one chain per server replica): what ``read_window`` reads."""
    return config.artifact_uri(namespace, *deployment_parts(name, PREDICTIONS))


def feedback_uri(config: OperatorConfig, namespace: str, name: str) -> str:
    """The folder of a deployment's labelled feedback (``feedback.jsonl`` from the local
    gateway, ``<pod>.jsonl`` from each gateway replica on Kubernetes; columns ``text``
    and ``label``), written only while ``spec.retrain`` keeps feedback."""
    return config.artifact_uri(namespace, *deployment_parts(name, FEEDBACK))


def version_of(body: dict[str, Any]) -> ModelVersion | None:
    """What serving needs of a BertModel body; None while it has no verified artifact."""
    status = body.get("status") or {}
    uri, sha = status.get("artifactUri"), status.get("manifestSha256")
    if not uri or not sha:
        return None
    return ModelVersion(
        name=str(body["metadata"]["name"]),
        artifact_uri=str(uri),
        manifest_sha256=str(sha),
        labels=tuple(status.get("labels") or ()),
    )


class ServingBackend(Protocol):
    def ensure(self, owner: ObjectRef, spec: BertDeploymentSpec, target: Target) -> Served:
        """Move serving one safe step towards target; never drops a request."""

    def observe(self, owner: ObjectRef) -> Served:
        """What serves now, without changing anything."""

    def cleanup(self, namespace: str, name: str, uid: str) -> list[str]:
        """Stop everything serving a deleted deployment; returns what was stopped."""
