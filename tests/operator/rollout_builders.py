"""Builders for the rollout tests: BertModel bodies as kopf hands them over, observations
with a chosen p95 and label mix, BertDeployment specs and a tick-by-tick runner for the
state machine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bertops.api import deployment as api
from bertops.api.meta import find_condition
from bertops.operator.rollout.actions import ManualAction, parse_action
from bertops.operator.rollout.metrics import Observation, Observations
from bertops.operator.rollout.state import Decision, decide

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def model_body(
    name: str,
    created: int = 0,
    *,
    family: str | None = "sentiment",
    ready: bool = True,
    f1: float | None = 0.8,
    accuracy: float | None = 0.85,
    fmt: str = "safetensors",
    labels: Mapping[str, str] | None = None,
    parent: str | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    """A BertModel body created ``created`` minutes after T0."""
    metadata: dict[str, Any] = {
        "name": name,
        "creationTimestamp": (T0 + timedelta(minutes=created)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if labels:
        metadata["labels"] = dict(labels)
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    spec: dict[str, Any] = {}
    if family:
        spec["family"] = family
    if parent:
        spec["compression"] = {"parentRef": {"name": parent}, "steps": [{"method": "onnxExport"}]}
    else:
        spec["artifactUri"] = f"/store/{name}"
    metrics = {k: v for k, v in (("macroF1", f1), ("accuracy", accuracy)) if v is not None}
    status: dict[str, Any] = {
        "format": fmt,
        "metrics": metrics,
        "conditions": [
            {"type": "Ready", "status": "True" if ready else "False", "reason": "Verified"}
        ],
    }
    return {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": "BertModel",
        "metadata": metadata,
        "spec": spec,
        "status": status,
    }


def obs(
    requests: float = 200,
    errors: float = 0,
    p95_ms: float = 40,
    labels: Mapping[str, float] | None = None,
    confidence: float = 0.9,
    feedback: tuple[float, float] = (0, 0),
    model: str | None = None,
) -> Observation:
    """An observation whose histogram yields exactly ``p95_ms`` as its p95: every request
    in one bucket ending at p95/0.95, so interpolation lands on p95."""
    predictions = dict(labels) if labels is not None else {"pos": requests / 2, "neg": requests / 2}
    count = sum(predictions.values())
    return Observation(
        model=model,
        requests=requests,
        errors=errors,
        latency_buckets=((p95_ms / 1000 / 0.95, requests), (float("inf"), requests)),
        predictions=predictions,
        confidence_sum=confidence * count,
        confidence_count=count,
        feedback_correct=feedback[0],
        feedback_total=feedback[1],
    )


def healthy() -> Observations:
    return Observations(stable=obs(), canary=obs())


def analysis(**fields: Any) -> api.Analysis:
    return api.Analysis.model_validate(fields)


def deployment_spec(
    steps: Sequence[tuple[int, int]] = ((10, 60), (50, 60)),
    *,
    auto_promote: bool = True,
    paused: bool = False,
    **analysis_fields: Any,
) -> api.BertDeploymentSpec:
    return api.BertDeploymentSpec.model_validate(
        {
            "model": {"selector": {"family": "sentiment"}},
            "rollout": {
                "steps": [{"weight": w, "pauseSeconds": p} for w, p in steps],
                "autoPromote": auto_promote,
                "paused": paused,
                # The offline evaluation has its own cases (a Tick's challenge phase).
                "analysis": {"minRequests": 50, "offlineEvaluation": False, **analysis_fields},
            },
        }
    )


@dataclass
class Tick:
    """One reconcile: ``at`` seconds after T0, what is selected, seen and asked for."""

    at: float
    selected: str | None
    observations: Observations | None = None  # None: healthy() on both sides
    action: str | None = None
    spec: api.BertDeploymentSpec | None = None
    metrics_down: bool = False  # the gateway's metrics could not be read
    routed: bool = True  # the gateway carries the canary at the decided weight


def run_ticks(
    spec: api.BertDeploymentSpec,
    ticks: Sequence[Tick],
    status: api.BertDeploymentStatus | None = None,
) -> list[Decision]:
    """Feed each decision's status into the next call, as the reconciler does."""
    current = status or api.BertDeploymentStatus()
    decisions = []
    for tick in ticks:
        action: ManualAction | None = parse_action(tick.action)
        decision = decide(
            tick.spec or spec,
            current,
            tick.selected,
            None if tick.metrics_down else tick.observations or healthy(),
            action,
            T0 + timedelta(seconds=tick.at),
            generation=1,
            routed=tick.routed,
        )
        decisions.append(decision)
        current = decision.status
    return decisions


def summary(decision: Decision) -> dict[str, Any]:
    """What a person checks after a reconcile, in one comparable dict."""
    st = decision.status

    def cond(type_: str) -> tuple[str, str] | None:
        found = find_condition(st.conditions, type_)
        return (str(found.status), found.reason) if found else None

    return {
        "stable": st.stable_model,
        "canary": st.canary_model,
        "weight": st.canary_weight,
        "step": st.rollout_step,
        "ready": cond(api.READY),
        "progressing": cond(api.PROGRESSING),
        "degraded": cond(api.DEGRADED),
        "events": [e.reason for e in decision.events],
        "history": [(r.model, r.outcome) for r in st.history or []],
        "rejected": st.rejected_model,
    }
