"""The retrain guards, the wait for feedback labels and the retraining chain,
table-driven: cooldown, at most maxRetrains per window, never a second retraining while
one runs, no retraining without drift or with a fixed model.ref; after drift, a wait for
minFeedbackRows new labels that ends with enough of them or at the deadline (a counter
that went down neither loses the labels counted nor starts early); and the chain's
outcomes from what the objects say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bertops.api import deployment as api
from bertops.operator.rollout.retrain import (
    ChainView,
    begin_wait,
    decide_wait,
    follow_chain,
    may_retrain,
)

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
        outcome=outcome,
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


# -- waiting for feedback labels -----------------------------------------------------------


def waiting(baseline: float = 100, have: float = 0, minutes_ago: float = 10) -> api.RetrainWait:
    since = T0 - timedelta(minutes=minutes_ago)
    return api.RetrainWait(
        since=since,
        baseline=baseline,
        have=have,
        needed=200,
        deadline=since + timedelta(seconds=3600),
    )


BEGIN = [
    # (case, spec, count, waits, baseline)
    ("feedback wanted: waits from the count now", spec(), 340.0, True, 340),
    ("count unknown: every later label is new", spec(), None, True, 0),
    ("feedback off: no wait", spec(includeFeedback=False), 340.0, False, None),
    ("minFeedbackRows 0: no wait", spec(minFeedbackRows=0), 340.0, False, None),
    ("maxWaitSeconds 0: no wait", spec(maxWaitSeconds=0), 340.0, False, None),
]


@pytest.mark.parametrize(
    ("case", "the_spec", "count", "waits", "baseline"), BEGIN, ids=[b[0] for b in BEGIN]
)
def test_begin_wait(
    case: str,
    the_spec: api.BertDeploymentSpec,
    count: float | None,
    waits: bool,
    baseline: float | None,
) -> None:
    wait = begin_wait(the_spec, count, T0)
    assert (wait is not None) is waits, case
    if wait is not None:
        assert (wait.baseline, wait.have, wait.needed) == (baseline, 0, 200)
        assert wait.since == T0 and wait.deadline == T0 + timedelta(hours=1)
        assert wait.message == "retraining waits for feedback: 0 of 200 new labels, until 13:00Z"


DECIDE = [
    # (case, spec, wait before, count, action, have after, words in the message)
    ("a few labels: waits", spec(), waiting(), 157.0, "wait", 57, "57 of 200 new labels"),
    ("no new label: waits", spec(), waiting(), 100.0, "wait", 0, "0 of 200"),
    ("count unknown: have stays", spec(), waiting(have=57), None, "wait", 57, "57 of 200"),
    (
        "enough labels: starts",
        spec(),
        waiting(have=57),
        350.0,
        "start",
        250,
        "250 new feedback labels arrived (200 needed)",
    ),
    ("exactly enough", spec(), waiting(), 300.0, "start", 200, "200 new feedback labels"),
    (
        "deadline passed with fewer: starts with what exists",
        spec(),
        waiting(minutes_ago=61),
        157.0,
        "start",
        57,
        "ended at 11:59:00Z with 57 of 200 new labels",
    ),
    (
        "deadline passed, count unknown",
        spec(),
        waiting(have=12, minutes_ago=61),
        None,
        "start",
        12,
        "with 12 of 200 new labels",
    ),
    (
        # The gateway restarted: 57 were counted, its counter began again at 0 and now
        # says 30. The 57 stay; the 30 are new; nothing more is assumed.
        "counter reset keeps what was counted",
        spec(),
        waiting(have=57),
        30.0,
        "wait",
        57,
        "57 of 200",
    ),
    (
        # One of two replicas restarted: 1157 -> 600. Taking 600 as all new would start now.
        "partial reset never starts early",
        spec(),
        waiting(baseline=1100, have=57),
        600.0,
        "wait",
        57,
        "57 of 200",
    ),
    (
        "minFeedbackRows lowered meanwhile",
        spec(minFeedbackRows=50),
        waiting(),
        157.0,
        "start",
        57,
        "(50 needed)",
    ),
    (
        "maxWaitSeconds lowered meanwhile",
        spec(maxWaitSeconds=300),
        waiting(),
        110.0,
        "start",
        10,
        "10 of 200",
    ),
    (
        "feedback turned off meanwhile",
        spec(includeFeedback=False),
        waiting(),
        110.0,
        "start",
        10,
        "no longer waiting",
    ),
    ("retraining disabled meanwhile", spec(enabled=False), waiting(), 110.0, "cancel", 10, ""),
    ("model.ref meanwhile", spec(fixed=True), waiting(), 110.0, "cancel", 10, "fixed model"),
]


@pytest.mark.parametrize(
    ("case", "the_spec", "before", "count", "action", "have", "words"),
    DECIDE,
    ids=[d[0] for d in DECIDE],
)
def test_decide_wait(
    case: str,
    the_spec: api.BertDeploymentSpec,
    before: api.RetrainWait,
    count: float | None,
    action: str,
    have: float,
    words: str,
) -> None:
    step = decide_wait(the_spec, before, count, T0)
    assert step.action == action, (case, step.message)
    assert step.wait.have == have, case
    assert words in step.message, (case, step.message)
    assert step.wait.since == before.since  # the deadline always counts from the drift


def test_a_reset_counter_keeps_counting_from_where_it_restarted() -> None:
    """After a reset, the labels the new counter adds count on top of those kept."""
    the_spec = spec()
    wait = waiting(have=57)
    for count, have in ((30.0, 57), (80.0, 107), (130.0, 157), (173.0, 200)):
        step = decide_wait(the_spec, wait, count, T0)
        wait = step.wait
        assert wait.have == have
    assert step.action == "start"


def test_a_far_deadline_names_its_day() -> None:
    wait = begin_wait(spec(maxWaitSeconds=2 * 86400), 0.0, T0)
    assert wait is not None and "until 2026-11-30 12:00Z" in (wait.message or "")
