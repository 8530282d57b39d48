"""The retrain guards and the retraining chain, table-driven: cooldown, at most
maxRetrains per window, never a second retraining while one runs, no retraining without
drift or with a fixed model.ref; and the chain's outcomes from what the objects say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bertops.api import deployment as api
from bertops.operator.rollout.retrain import ChainView, follow_chain, may_retrain

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def spec(**retrain: Any) -> api.BertDeploymentSpec:
    model: dict[str, Any] = {"selector": {"family": "sentiment"}}
    if retrain.pop("fixed", False):
        model = {"ref": {"name": "sentiment-v1"}}
    return api.BertDeploymentSpec.model_validate(
        {
            "model": model,
            "retrain": {
                "enabled": True,
                "cooldownSeconds": 600,
                "maxRetrains": 2,
                "windowSeconds": 3600,
                **retrain,
            },
        }
    )


def record(minutes_ago: float, outcome: str = "Promoted", n: int = 1) -> api.RetrainRecord:
    return api.RetrainRecord(
        at=T0 - timedelta(minutes=minutes_ago),
        dataset=f"web-retrain-{n}",
        training=f"web-retrain-{n}",
        model=f"web-retrain-{n}",
        outcome=outcome,  # type: ignore[arg-type]
    )


def status(
    drifted: bool | None = True,
    history: list[api.RetrainRecord] | None = None,
    active: str | None = None,
) -> api.BertDeploymentStatus:
    retrains = None
    if history:
        retrains = api.RetrainStatus(
            count=len(history), last_at=max(r.at for r in history), history=history, active=active
        )
    return api.BertDeploymentStatus(
        stable_model="sentiment-v1",
        drift=api.DriftStatus(score=0.8 if drifted else 0.1, drifted=drifted),
        retrains=retrains,
    )


GUARDS = [
    # (case, spec, status, allowed, words in the message)
    ("first drift retrains", spec(), status(), True, "0.80"),
    ("disabled", spec(enabled=False), status(), False, "enabled is false"),
    ("fixed model.ref cannot roll out", spec(fixed=True), status(), False, "model.ref"),
    ("no drift", spec(), status(drifted=False), False, "did not find drift"),
    ("not enough data yet", spec(), status(drifted=None), False, "did not find drift"),
    (
        "one still running",
        spec(cooldownSeconds=0),
        status(history=[record(30, "Running")], active="web-retrain-1"),
        False,
        "still running",
    ),
    ("in cooldown", spec(), status(history=[record(5)]), False, "cooldown"),
    ("cooldown over", spec(), status(history=[record(11)]), True, "drift score"),
    (
        "max per window reached",
        spec(),
        status(history=[record(50, n=1), record(20, n=2)]),
        False,
        "maxRetrains 2",
    ),
    (
        "older ones left the window",
        spec(),
        status(history=[record(120, n=1), record(20, n=2)]),
        True,
        "drift score",
    ),
    ("maxRetrains 0 never retrains", spec(maxRetrains=0), status(), False, "maxRetrains 0"),
]


@pytest.mark.parametrize(
    ("case", "the_spec", "the_status", "allowed", "words"), GUARDS, ids=[g[0] for g in GUARDS]
)
def test_retrain_guards(
    case: str,
    the_spec: api.BertDeploymentSpec,
    the_status: api.BertDeploymentStatus,
    allowed: bool,
    words: str,
) -> None:
    verdict = may_retrain(the_spec, the_status, T0)
    assert verdict.allowed is allowed, (case, verdict.message)
    assert words in verdict.message
    assert verdict.reason == (api.REASON_RETRAIN_STARTED if allowed else api.REASON_RETRAIN_SKIPPED)


def test_repeated_drift_checks_start_exactly_one_retraining() -> None:
    """Checks every minute for an hour, all drifted: the first starts one; while it runs
    the rest are refused, and once it ended the cooldown refuses them until it passes."""
    the_spec = spec(cooldownSeconds=1800, maxRetrains=5)
    the_status = status()
    started = []
    for minute in range(60):
        now = T0 + timedelta(minutes=minute)
        if may_retrain(the_spec, the_status, now).allowed:
            started.append(minute)
            the_status.retrains = api.RetrainStatus(
                count=len(started),
                last_at=now,
                active="web-retrain-1",
                history=[api.RetrainRecord(at=now, dataset="d", training="web-retrain-1")],
            )
        if minute == 10 and the_status.retrains:  # the chain ended (promoted)
            the_status.retrains.active = None
    assert started == [0, 30]


CHAIN = [
    # (case, outcome before, view, stable, canary, history, expected outcome)
    ("training runs", "Running", ChainView("Running"), "v1", None, [], "Running"),
    ("training failed", "Running", ChainView("Failed", "exit 2"), "v1", None, [], "Failed"),
    ("training gone", "Running", ChainView(None), "v1", None, [], "Failed"),
    ("trained, model not Ready yet", "Running", ChainView("Succeeded"), "v1", None, [], "Trained"),
    (
        "trained, model is the canary",
        "Trained",
        ChainView("Succeeded", model_ready=True),
        "v1",
        "web-retrain-1",
        [],
        "Trained",
    ),
    (
        "promoted",
        "Trained",
        ChainView("Succeeded", model_ready=True),
        "web-retrain-1",
        None,
        [],
        "Promoted",
    ),
    (
        "rolled back",
        "Trained",
        ChainView("Succeeded", model_ready=True),
        "v1",
        None,
        [api.RolloutRecord(model="web-retrain-1", outcome="RolledBack", at=T0, message="gate")],
        "RolledBack",
    ),
    (
        "ready but never selected",
        "Trained",
        ChainView("Succeeded", model_ready=True),
        "v1",
        None,
        [],
        "NotSelected",
    ),
    (
        "another canary runs: wait",
        "Trained",
        ChainView("Succeeded", model_ready=True),
        "v1",
        "other",
        [],
        "Trained",
    ),
    ("an ended chain stays ended", "Failed", ChainView("Succeeded"), "v1", None, [], "Failed"),
]


@pytest.mark.parametrize(
    ("case", "before", "view", "stable", "canary", "history", "expected"),
    CHAIN,
    ids=[c[0] for c in CHAIN],
)
def test_retrain_chain(
    case: str,
    before: str,
    view: ChainView,
    stable: str,
    canary: str | None,
    history: list[api.RolloutRecord],
    expected: str,
) -> None:
    the_record = record(5, before).model_copy(update={"model": "web-retrain-1"})
    the_status = api.BertDeploymentStatus(
        stable_model=stable, canary_model=canary, history=history or None
    )
    outcome, _ = follow_chain(the_record, view, the_status)
    assert outcome == expected, case
