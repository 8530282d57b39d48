"""The BertDeployment reconciler with a fake kube layer and a fake serving backend: what
it asks the backend to serve, when Ready turns True, that it decides only when due,
and the operator metrics it keeps. No API server, no processes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bertops.api.deployment import BertDeploymentSpec, BertDeploymentStatus
from bertops.api.meta import find_condition
from bertops.api.routes import Backend, Routes
from bertops.operator.config import OperatorConfig
from bertops.operator.deployment.reconciler import DeploymentReconciler
from bertops.operator.deployment.target import Served, Target
from bertops.operator.metrics import OperatorMetrics
from bertops.operator.objects import Event, ObjectRef
from bertops.operator.rollout.state import Decision

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def model_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": "BertModel",
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": "2026-11-28T10:00:00Z"},
        "spec": {"family": "tiny", "artifactUri": f"/store/{name}"},
        "status": {
            "artifactUri": f"/store/{name}",
            "manifestSha256": "ab" * 32,
            "labels": ["neg", "pos"],
            "conditions": [{"type": "Ready", "status": "True", "reason": "Verified"}],
        },
    }


def deployment_body(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": "BertDeployment",
        "metadata": {"name": "web", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": {"model": {"selector": {"family": "tiny", "policy": "latest"}}},
        "status": status or {},
    }


class FakeKube:
    """The one read the reconciler makes, not a Kube: ``type: ignore[arg-type]`` where
    it is passed for one."""

    def __init__(self, models: list[dict[str, Any]]) -> None:
        self.models = models

    def list_objects(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        assert (kind, namespace) == ("BertModel", "ns")
        return self.models


class FakeBackend:
    def __init__(self) -> None:
        self.targets: list[Target] = []
        self.routes: Routes | None = None

    def ensure(self, owner: ObjectRef, spec: BertDeploymentSpec, target: Target) -> Served:
        self.targets.append(target)
        endpoint = "http://127.0.0.1:9" if self.routes else None
        return Served(endpoint, self.routes, settled=self.routes is not None)

    def observe(self, owner: ObjectRef) -> Served:
        return Served(None, self.routes, True)

    def cleanup(self, namespace: str, name: str, uid: str) -> list[str]:
        return []


def reconciler(
    backend: FakeBackend, metrics: OperatorMetrics | None = None
) -> DeploymentReconciler:
    return DeploymentReconciler(
        FakeKube([model_body("tiny-v1")]),  # type: ignore[arg-type]
        OperatorConfig(),
        backend,
        lambda model, body: model.model_validate(body),
        lambda: NOW,
        metrics,
    )


def test_ready_waits_for_the_gateway_then_names_the_endpoint() -> None:
    backend = FakeBackend()
    rec = reconciler(backend)
    plan = rec.plan(deployment_body())
    assert plan.status is not None and plan.status["stableModel"] == "tiny-v1"
    target = backend.targets[-1]
    assert target.stable.manifest_sha256 == "ab" * 32 and target.canary is None
    status = BertDeploymentStatus.model_validate(plan.status)
    ready = find_condition(status.conditions, "Ready")
    assert ready is not None and (ready.status, ready.reason) == ("False", "ServersStarting")
    assert "endpoint" not in plan.status and [e.reason for e in plan.events] == ["Serving"]

    backend.routes = Routes(stable=Backend(name="tiny-v1", url="http://127.0.0.1:8"))
    rec.forget("ns", "web")  # due at once (the poller would come back within a second)
    plan = rec.plan(deployment_body(plan.status))
    assert plan.status is not None and plan.status["endpoint"] == "http://127.0.0.1:9"
    ready = find_condition(BertDeploymentStatus.model_validate(plan.status).conditions, "Ready")
    assert ready is not None and (ready.status, ready.reason) == ("True", "Serving")

    # Settled and nothing changed: no new decision (no status write), serving still kept.
    calls = len(backend.targets)
    assert rec.plan(deployment_body(plan.status)).empty
    assert len(backend.targets) == calls + 1


def test_rollout_metrics_follow_the_decisions() -> None:
    metrics = OperatorMetrics()
    rec = reconciler(FakeBackend(), metrics)
    ref = ObjectRef("web", "ns", 1, "u-1", "BertDeployment")
    status = BertDeploymentStatus(stable_model="tiny-v1", canary_model="tiny-v2", canary_weight=30)
    events = [Event("Warning", "DivergenceGateFailed", "rolled back")]
    rec._count(ref, Decision(status, events, 1.0, [], True), status)
    value = metrics.registry.get_sample_value
    assert (
        value("bertops_operator_canary_weight_percent", {"namespace": "ns", "deployment": "web"})
        == 30
    )
    labels = {"outcome": "RolledBack", "reason": "DivergenceGateFailed"}
    assert value("bertops_operator_rollout_outcomes_total", labels) == 1


def test_a_model_retrained_for_another_deployment_is_not_selected() -> None:
    """Finding 4: drift in deployment `food` registered `food-retrain-1` in the family;
    deployment `web`, selecting the same family, started it as its own canary."""
    leaked = model_body("food-retrain-1")
    leaked["metadata"]["creationTimestamp"] = "2026-11-28T11:00:00Z"  # the newest
    leaked["metadata"]["labels"] = {"bertops.io/retrained-for": "food"}
    backend = FakeBackend()
    rec = DeploymentReconciler(
        FakeKube([model_body("tiny-v1"), leaked]),  # type: ignore[arg-type]
        OperatorConfig(),
        backend,
        lambda model, body: model.model_validate(body),
        lambda: NOW,
    )
    body = deployment_body({"stableModel": "tiny-v1"})
    body["spec"]["rollout"] = {"analysis": {"offlineEvaluation": False}}
    plan = rec.plan(body)
    assert plan.status is not None and plan.status["stableModel"] == "tiny-v1"
    assert not plan.status.get("canaryModel") and backend.targets[-1].canary is None
    shared = {**leaked["metadata"]["labels"], "bertops.io/shared-with-family": "true"}
    leaked["metadata"]["labels"] = shared
    rec.forget("ns", "web")
    plan = rec.plan(body)
    assert plan.status is not None and plan.status["canaryModel"] == "food-retrain-1"


def test_the_canary_is_routed_without_cookies_and_paired_with_stable() -> None:
    body = deployment_body({"stableModel": "tiny-v1"})
    body["spec"]["rollout"] = {"analysis": {"offlineEvaluation": False}}
    backend = FakeBackend()
    rec = DeploymentReconciler(
        FakeKube([model_body("tiny-v1"), model_body("tiny-v2")]),  # type: ignore[arg-type]
        OperatorConfig(),
        backend,
        lambda model, body: model.model_validate(body),
        lambda: NOW,
    )
    plan = rec.plan(body)
    assert plan.status is not None and plan.status["canaryModel"] == "tiny-v2"
    target = backend.targets[-1]
    assert target.sticky == "none" and target.compare and not target.shadow
    assert target.canary is not None and target.weight == 10
