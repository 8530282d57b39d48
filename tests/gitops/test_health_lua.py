"""The Argo CD health Lua (gitops/argocd/health/bertops.lua) run with lupa's Lua 5.1
(the dialect of Argo CD's gopher-lua) on the status documents the operator writes:
every main-condition reason of every kind, the BertDeployment's rollout states (canary,
paused -> Suspended, rolled back -> Degraded, drift) and the generation guard. A reason
constant added to bertops.api without a decision here fails the last test."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from bertops.api import dataset, deployment, model, training
from tests.gitops.render import GITOPS, render

lua51 = pytest.importorskip("lupa.lua51", reason="lupa is in the dev extra")
SCRIPT = (GITOPS / "argocd/health/bertops.lua").read_text()
OPERATOR_REASONS = {"Retrying", "ResultUnreadable"}  # set by planners/common.py, runtime


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT)
    return str(result["status"]), str(result["message"])


def cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message or reason}


def obj(
    kind: str, *conditions: dict[str, Any], generation: int = 1, observed: int = 1
) -> dict[str, Any]:
    return {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "ns", "generation": generation},
        "status": {"observedGeneration": observed, "conditions": list(conditions)},
    }


# (kind, main condition type, status, reason) -> Argo CD health, as the planners set them.
CASES = [
    ("BertDataset", "Ready", "True", dataset.REASON_PREPARED, "Healthy"),
    ("BertDataset", "Ready", "False", dataset.REASON_PREPARING, "Progressing"),
    ("BertDataset", "Ready", "False", "Retrying", "Progressing"),
    ("BertDataset", "Ready", "False", dataset.REASON_INVALID_DATA, "Degraded"),
    ("BertDataset", "Ready", "False", dataset.REASON_STEP_FAILED, "Degraded"),
    ("BertDataset", "Ready", "False", dataset.REASON_INVALID_SPEC, "Degraded"),
    ("BertDataset", "Ready", "False", "ResultUnreadable", "Degraded"),
    ("BertTraining", "Succeeded", "True", training.REASON_COMPLETED, "Healthy"),
    ("BertTraining", "Succeeded", "Unknown", training.REASON_TRAINING, "Progressing"),
    ("BertTraining", "Succeeded", "Unknown", "Retrying", "Progressing"),
    ("BertTraining", "Succeeded", "Unknown", training.REASON_WAITING_FOR_DATASET, "Progressing"),
    ("BertTraining", "Succeeded", "Unknown", training.REASON_DATASET_NOT_FOUND, "Progressing"),
    ("BertTraining", "Succeeded", "False", training.REASON_STEP_FAILED, "Degraded"),
    ("BertTraining", "Succeeded", "False", training.REASON_INVALID_SPEC, "Degraded"),
    ("BertTraining", "Succeeded", "False", training.REASON_UNSUPPORTED_TASK, "Degraded"),
    ("BertTraining", "Succeeded", "False", training.REASON_NAME_CONFLICT, "Degraded"),
    ("BertTraining", "Succeeded", "False", "ResultUnreadable", "Degraded"),
    ("BertModel", "Ready", "True", model.REASON_VERIFIED, "Healthy"),
    ("BertModel", "Ready", "Unknown", model.REASON_COMPRESSING, "Progressing"),
    ("BertModel", "Ready", "Unknown", model.REASON_EVALUATING, "Progressing"),
    ("BertModel", "Ready", "Unknown", model.REASON_WAITING_FOR_PARENT, "Progressing"),
    ("BertModel", "Ready", "Unknown", model.REASON_WAITING_FOR_TRAINING, "Progressing"),
    ("BertModel", "Ready", "Unknown", model.REASON_TRAINING_NOT_FOUND, "Progressing"),
    ("BertModel", "Ready", "Unknown", model.REASON_PARENT_NOT_FOUND, "Progressing"),
    ("BertModel", "Ready", "Unknown", model.REASON_DATASET_NOT_FOUND, "Progressing"),
    ("BertModel", "Ready", "Unknown", "Retrying", "Progressing"),
    ("BertModel", "Ready", "False", model.REASON_GATE_FAILED, "Degraded"),
    ("BertModel", "Ready", "False", model.REASON_VERIFICATION_FAILED, "Degraded"),
    ("BertModel", "Ready", "False", model.REASON_STEP_FAILED, "Degraded"),
    ("BertModel", "Ready", "False", model.REASON_INVALID_SPEC, "Degraded"),
    ("BertModel", "Ready", "False", model.REASON_UNSUPPORTED_TASK, "Degraded"),
    ("BertModel", "Ready", "False", "ResultUnreadable", "Degraded"),
    # Servers starting is work in progress (Argo CD used to show it Degraded).
    ("BertDeployment", "Ready", "False", deployment.REASON_SERVERS_STARTING, "Progressing"),
]


@pytest.mark.parametrize(("kind", "type_", "status", "reason", "expected"), CASES)
def test_main_condition(kind: str, type_: str, status: str, reason: str, expected: str) -> None:
    got, message = health(obj(kind, cond(type_, status, reason, f"the {reason} message")))
    assert got == expected
    assert message == f"{reason}: the {reason} message"


@pytest.mark.parametrize("kind", ["BertDataset", "BertTraining", "BertModel", "BertDeployment"])
def test_no_status_or_stale_generation_is_progressing(kind: str) -> None:
    bare = {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "generation": 1},
    }
    assert health(bare) == ("Progressing", "waiting for the bertops operator to report status")
    main = "Succeeded" if kind == "BertTraining" else "Ready"
    stale = obj(kind, cond(main, "True", "Done"), generation=3, observed=2)
    assert health(stale) == ("Progressing", "waiting for the operator to observe generation 3")


def serving(*extra: dict[str, Any]) -> dict[str, Any]:
    return obj(
        "BertDeployment",
        cond("Ready", "True", deployment.REASON_SERVING, "serving m1"),
        *extra,
    )


D = deployment
DEPLOYMENT_CASES = [
    (
        "idle",
        serving(
            cond("Progressing", "False", D.REASON_SERVING),
            cond("Degraded", "False", D.REASON_SERVING, " "),
        ),
        "Healthy",
        "Serving: serving m1",
    ),
    (
        "promoted",
        serving(cond("Progressing", "False", D.REASON_PROMOTED, "promoted m2")),
        "Healthy",
        "Serving: serving m1",
    ),
    (
        "canary",
        serving(
            cond("Progressing", "True", D.REASON_CANARY, "m2 step 1/2 at 10%"),
            cond("Degraded", "False", D.REASON_CANARY, " "),
        ),
        "Progressing",
        "CanaryInProgress: m2 step 1/2 at 10%",
    ),
    (
        "traffic",
        serving(cond("Progressing", "True", D.REASON_WAITING_FOR_TRAFFIC, "waits")),
        "Progressing",
        "WaitingForTraffic: waits",
    ),
    (
        "not yet sure",
        serving(cond("Progressing", "True", D.REASON_NOT_YET_SURE, "needs 80 more")),
        "Progressing",
        "NotYetSure: needs 80 more",
    ),
    (
        "routes not carried yet",
        serving(cond("Progressing", "True", D.REASON_WAITING_FOR_ROUTES, "gateway")),
        "Progressing",
        "WaitingForRoutes: gateway",
    ),
    (
        "progress deadline",
        serving(cond("Progressing", "False", D.REASON_PROGRESS_DEADLINE, "900s")),
        "Degraded",
        "ProgressDeadlineExceeded: 900s",
    ),
    (
        "offline evaluation",
        serving(cond("Progressing", "Unknown", D.REASON_CHALLENGE_RUNNING, "scoring m2")),
        "Progressing",
        "OfflineEvaluation: scoring m2",
    ),
    (
        "offline evaluation refused",
        serving(cond("Degraded", "True", D.REASON_CHALLENGE_REFUSED, "0.71 < 0.80")),
        "Degraded",
        "OfflineEvaluationRefused: 0.71 < 0.80",
    ),
    (
        "offline evaluation failed",
        serving(cond("Degraded", "True", D.REASON_CHALLENGE_FAILED, "step failed")),
        "Degraded",
        "OfflineEvaluationFailed: step failed",
    ),
    (
        "no metrics",
        serving(cond("Progressing", "True", D.REASON_METRICS_UNAVAILABLE, "no prom")),
        "Progressing",
        "MetricsUnavailable: no prom",
    ),
    (
        "awaiting",
        serving(cond("Progressing", "True", D.REASON_AWAITING_PROMOTION, "promote?")),
        "Progressing",
        "AwaitingPromotion: promote?",
    ),
    (
        "paused",
        serving(
            cond("Progressing", "Unknown", D.REASON_PAUSED, "rollout paused; analysis continues")
        ),
        "Suspended",
        "RolloutPaused: rollout paused; analysis continues",
    ),
    (
        "rolled back",
        serving(
            cond("Progressing", "False", D.REASON_ROLLED_BACK, "rb"),
            cond("Degraded", "True", D.REASON_ERROR_RATE_GATE, "error rate 5% > 2%"),
        ),
        "Degraded",
        "ErrorRateGateFailed: error rate 5% > 2%",
    ),
    (
        "aborted",
        serving(cond("Degraded", "True", D.REASON_ABORTED, "aborted by hand")),
        "Degraded",
        "Aborted: aborted by hand",
    ),
    (
        "drifted",
        serving(cond("Drifted", "True", D.REASON_DRIFT_DETECTED, "score 0.41 > 0.3")),
        "Healthy",
        "Serving: serving m1; DriftDetected: score 0.41 > 0.3",
    ),
    (
        "no drift",
        serving(cond("Drifted", "False", D.REASON_NO_DRIFT, "score 0.1")),
        "Healthy",
        "Serving: serving m1",
    ),
    (
        "drift unknown: REASON_NOT_ENOUGH_DATA",
        serving(cond("Drifted", "Unknown", D.REASON_NOT_ENOUGH_DATA, "no score")),
        "Healthy",
        "Serving: serving m1",
    ),
    (
        "drift unknown: REASON_NO_REFERENCE",
        serving(cond("Drifted", "Unknown", D.REASON_NO_REFERENCE, "no score")),
        "Healthy",
        "Serving: serving m1",
    ),
    (
        "drift unknown: REASON_REFERENCE_FAILED",
        serving(cond("Drifted", "Unknown", D.REASON_REFERENCE_FAILED, "no score")),
        "Healthy",
        "Serving: serving m1",
    ),
    (
        "drift unknown: REASON_DRIFT_CHECK_FAILED",
        serving(cond("Drifted", "Unknown", D.REASON_DRIFT_CHECK_FAILED, "no score")),
        "Healthy",
        "Serving: serving m1",
    ),
    (
        "drift unknown: REASON_DRIFT_DISABLED",
        serving(cond("Drifted", "Unknown", D.REASON_DRIFT_DISABLED, "no score")),
        "Healthy",
        "Serving: serving m1",
    ),
    (
        "no model",
        obj(
            "BertDeployment",
            cond("Ready", "False", D.REASON_NO_MODEL, "no model passes the selector"),
        ),
        "Progressing",
        "NoModelSelected: no model passes the selector",
    ),
    (
        "first rollout paused",
        obj(
            "BertDeployment",
            cond("Ready", "False", D.REASON_NO_MODEL),
            cond("Progressing", "Unknown", D.REASON_PAUSED, "m1 waits: rollout paused"),
        ),
        "Suspended",
        "RolloutPaused: m1 waits: rollout paused",
    ),
]


@pytest.mark.parametrize(
    ("body", "expected", "message"),
    [c[1:] for c in DEPLOYMENT_CASES],
    ids=[c[0] for c in DEPLOYMENT_CASES],
)
def test_deployment(body: dict[str, Any], expected: str, message: str) -> None:
    assert health(body) == (expected, message)


def test_every_gate_reason_is_degraded() -> None:
    gates = [v for k, v in vars(D).items() if k.endswith("_GATE")]
    assert len(gates) >= 6
    for reason in gates:
        assert health(serving(cond("Degraded", "True", reason, "m")))[0] == "Degraded"


def test_every_api_reason_is_decided() -> None:
    """A new reason constant in bertops.api must get a case above (or be a rollout reason
    that only appears on Progressing, decided by its condition status)."""
    covered = {c[3] for c in CASES} | OPERATOR_REASONS
    covered |= {
        c.get("reason") for _, body, _, _ in DEPLOYMENT_CASES for c in body["status"]["conditions"]
    }
    rollout_only = {
        D.REASON_RESUMED,
        D.REASON_RETRY,
        D.REASON_SUPERSEDED,
        D.REASON_STEP_ADVANCED,
        D.REASON_INVALID_ACTION,
        D.REASON_ACTION_IGNORED,
    }
    rollout_only |= {v for k, v in vars(D).items() if k.endswith("_GATE")}
    # Event reasons of the retrain loop: never on a condition.
    rollout_only |= {
        D.REASON_RETRAIN_STARTED,
        D.REASON_RETRAIN_SKIPPED,
        D.REASON_RETRAIN_FAILED,
        D.REASON_RETRAIN_WAITING,
    }
    for module in (dataset, training, model, deployment):
        for name, value in vars(module).items():
            if name.startswith("REASON_"):
                assert value in covered | rollout_only, f"{module.__name__}.{name} = {value!r}"


def test_registered_for_the_four_kinds() -> None:
    (cm,) = render(GITOPS / "argocd/health")
    assert cm["kind"] == "ConfigMap" and cm["metadata"] == {
        "name": "argocd-cm",
        "namespace": "argocd",
        "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"},
    }
    for kind in ("BertDataset", "BertTraining", "BertModel", "BertDeployment"):
        assert cm["data"][f"resource.customizations.health.bertops.io_{kind}"] == SCRIPT
    assert yaml.safe_dump(cm)  # round-trips
