"""BertDeployment statuses in each rollout state, as the operator's state machine
(bertops.operator.rollout.state) writes them, with the phase and exit code
``bertops rollout status`` must give for each. Shared by the unit and the API-server tests
in this folder."""

from __future__ import annotations

from typing import Any

AT = "2026-11-28T12:00:00Z"


def condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": AT,
        "observedGeneration": 1,
    }


def status(
    ready: tuple[str, str] = ("True", "Serving"),
    progressing: tuple[str, str, str] = ("False", "Serving", "no rollout"),
    degraded: tuple[str, str, str] = ("False", "Serving", ""),
    **fields: Any,
) -> dict[str, Any]:
    return {
        "observedGeneration": 1,
        "stableModel": "sentiment-v1",
        "canaryWeight": 0,
        "conditions": [
            condition("Ready", *ready),
            condition("Progressing", *progressing),
            condition("Degraded", *degraded),
        ],
        **fields,
    }


GATES = {
    "at": AT,
    "gates": [
        {
            "name": "errorRate",
            "result": "Passed",
            "value": 0.0,
            "lower": 0.0,
            "upper": 0.0279,
            "confidence": 0.983,
            "threshold": 0.05,
            "samples": 200,
        },
        {
            "name": "pairedAccuracy",
            "result": "NotYetSure",
            "value": 0.043,
            "lower": -0.063,
            "upper": 0.147,
            "confidence": 0.9988,
            "threshold": -0.05,
            "samples": 70,
            "needed": 40,
        },
    ],
    "looks": 3,
}
CANARY: dict[str, Any] = {
    "canaryModel": "sentiment-v2",
    "canaryWeight": 10,
    "rolloutStep": 0,
    "analysis": GATES,
}
ROLLED_BACK_GATES = {
    "at": AT,
    "gates": [
        {"name": "errorRate", "result": "Failed", "value": 0.4, "threshold": 0.05},
    ],
}

# name -> (status or None for "never reconciled", phase, exit code)
STATES: dict[str, tuple[dict[str, Any] | None, str, int]] = {
    "healthy": (
        status(
            history=[{"model": "sentiment-v1", "outcome": "Promoted", "at": AT, "message": "first"}]
        ),
        "Healthy",
        0,
    ),
    "pending": (None, "Pending", 2),
    "progressing": (
        status(progressing=("True", "CanaryInProgress", "sentiment-v2 step 1/2 at 10%"), **CANARY),
        "Progressing",
        2,
    ),
    "waiting-for-traffic": (
        status(progressing=("True", "WaitingForTraffic", "waits for 50 requests"), **CANARY),
        "Progressing",
        2,
    ),
    "paused": (
        status(
            progressing=("Unknown", "RolloutPaused", "rollout paused; analysis continues"),
            pausedByAction=True,
            **CANARY,
        ),
        "Paused",
        2,
    ),
    "awaiting-promotion": (
        status(
            progressing=("Unknown", "AwaitingPromotion", "all 2 steps passed"),
            **{**CANARY, "rolloutStep": 2, "canaryWeight": 50},
        ),
        "AwaitingPromotion",
        2,
    ),
    "rolled-back": (
        status(
            progressing=("False", "RolledBack", "no rollout in progress"),
            degraded=("True", "ErrorRateGateFailed", "rolled back sentiment-v2: errorRate"),
            rejectedModel="sentiment-v2",
            analysis=ROLLED_BACK_GATES,
            history=[
                {"model": "sentiment-v2", "outcome": "RolledBack", "at": AT, "message": "gate"}
            ],
        ),
        "RolledBack",
        1,
    ),
    "aborted": (
        status(
            progressing=("False", "Aborted", "no rollout in progress"),
            degraded=("False", "Aborted", ""),
            rejectedModel="sentiment-v2",
            history=[
                {"model": "sentiment-v2", "outcome": "Aborted", "at": AT, "message": "by hand"}
            ],
        ),
        "Aborted",
        1,
    ),
    "no-model": (
        status(
            ready=("False", "NoModelSelected"),
            progressing=("False", "NoModelSelected", "no rollout"),
            stableModel=None,
        ),
        "Degraded",
        1,
    ),
}
