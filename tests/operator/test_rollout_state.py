"""The rollout state machine, tick by tick: first model, step progression, traffic and
metrics holds, pause and resume (spec and by hand), manual promote/abort/retry applied
exactly once, rollback on a failed gate, supersession and promotion (table-driven)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from bertops.api import deployment as api
from bertops.operator.rollout.metrics import Observations
from bertops.operator.rollout.state import decide
from tests.operator.rollout_builders import (
    T0,
    Tick,
    deployment_spec,
    healthy,
    obs,
    run_ticks,
    summary,
)

STEPS = ((10, 60), (50, 60))
# More requests than a healthy look saw: a new look of the sequential rule (only a look fails).
BAD_ERRORS = Observations(stable=obs(), canary=obs(requests=400, errors=100))
FEW = Observations(stable=obs(), canary=obs(requests=10))
# The state after v1 serves and v2 starts at step 1 (two ticks every scenario shares).
START = [Tick(0, "v1"), Tick(10, "v2")]
TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


@dataclass
class Case:
    name: str
    ticks: list[Tick]
    expect: dict[str, Any]  # keys of summary() that must match after the last tick
    spec: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case(
        "first model goes straight to stable",
        [Tick(0, "v1")],
        {
            "stable": "v1",
            "canary": None,
            "weight": 0,
            "ready": (TRUE, api.REASON_SERVING),
            "progressing": (FALSE, api.REASON_SERVING),
            "degraded": (FALSE, api.REASON_SERVING),
            "events": [api.REASON_SERVING],
        },
    ),
    Case(
        "nothing selected, nothing served",
        [Tick(0, None)],
        {"stable": None, "ready": (FALSE, api.REASON_NO_MODEL), "events": []},
    ),
    Case(
        "a new model starts a rollout at step 0",
        START,
        {
            "stable": "v1",
            "canary": "v2",
            "weight": 10,
            "step": 0,
            "progressing": (TRUE, api.REASON_CANARY),
            "events": [api.REASON_CANARY],
        },
    ),
    Case(
        "the step holds until its pause has elapsed",
        [*START, Tick(40, "v2")],
        {"canary": "v2", "weight": 10, "step": 0, "events": []},
    ),
    Case(
        "a passed pause advances to the next step",
        [*START, Tick(71, "v2")],
        {"canary": "v2", "weight": 50, "step": 1, "events": [api.REASON_STEP_ADVANCED]},
    ),
    Case(
        "all steps passed: promoted",
        [*START, Tick(71, "v2"), Tick(132, "v2")],
        {
            "stable": "v2",
            "canary": None,
            "weight": 0,
            "step": None,
            "progressing": (FALSE, "Promoted"),
            "degraded": (FALSE, api.REASON_PROMOTED),
            "events": [api.REASON_PROMOTED],
            "history": [("v2", "Promoted")],
        },
    ),
    Case(
        "no autoPromote: hold at the last weight",
        [*START, Tick(71, "v2"), Tick(132, "v2"), Tick(500, "v2")],
        {
            "stable": "v1",
            "canary": "v2",
            "weight": 50,
            "step": 2,
            "progressing": (UNKNOWN, api.REASON_AWAITING_PROMOTION),
            "events": [],
        },
        {"auto_promote": False},
    ),
    Case(
        "no autoPromote: promoted by hand",
        [*START, Tick(71, "v2"), Tick(132, "v2"), Tick(140, "v2", action="promote/1")],
        {
            "stable": "v2",
            "canary": None,
            "events": [api.REASON_PROMOTED],
            "history": [("v2", "Promoted")],
        },
        {"auto_promote": False},
    ),
    Case(
        "promote by hand skips the remaining steps",
        [*START, Tick(20, "v2", action="promote/a")],
        {"stable": "v2", "canary": None, "events": [api.REASON_PROMOTED]},
    ),
    Case(
        "a failed gate rolls back",
        [*START, Tick(40, "v2", BAD_ERRORS)],
        {
            "stable": "v1",
            "canary": None,
            "weight": 0,
            "step": None,
            "rejected": "v2",
            "ready": (TRUE, api.REASON_SERVING),
            "progressing": (FALSE, "RolledBack"),
            "degraded": (TRUE, api.REASON_ERROR_RATE_GATE),
            "events": [api.REASON_ERROR_RATE_GATE],
            "history": [("v2", "RolledBack")],
        },
    ),
    Case(
        "a rolled-back model is not retried",
        [*START, Tick(40, "v2", BAD_ERRORS), Tick(100, "v2"), Tick(200, "v2")],
        {
            "canary": None,
            "rejected": "v2",
            "degraded": (TRUE, api.REASON_ERROR_RATE_GATE),
            "events": [],
        },
    ),
    Case(
        "until the selection changes again",
        [*START, Tick(40, "v2", BAD_ERRORS), Tick(100, "v3")],
        {
            "canary": "v3",
            "weight": 10,
            "rejected": None,
            "degraded": (FALSE, api.REASON_CANARY),
            "events": [api.REASON_CANARY],
        },
    ),
    Case(
        "retry by hand rolls the rejected model out again",
        [*START, Tick(40, "v2", BAD_ERRORS), Tick(100, "v2", action="retry/1")],
        {
            "canary": "v2",
            "step": 0,
            "rejected": None,
            "events": [api.REASON_RETRY, api.REASON_CANARY],
        },
    ),
    Case(
        "too little traffic waits however long the pause",
        [*START, Tick(71, "v2", FEW), Tick(900, "v2", FEW)],
        {
            "canary": "v2",
            "step": 0,
            "progressing": (TRUE, api.REASON_WAITING_FOR_TRAFFIC),
            "degraded": (FALSE, api.REASON_CANARY),
            "events": [],
        },
    ),
    Case(
        "unreadable metrics hold the step",
        [*START, Tick(71, "v2", metrics_down=True)],
        {"canary": "v2", "step": 0, "progressing": (TRUE, api.REASON_METRICS_UNAVAILABLE)},
    ),
    Case(
        "spec pause: a new model waits",
        [Tick(0, "v1"), Tick(10, "v2")],
        {"stable": "v1", "canary": None, "progressing": (UNKNOWN, api.REASON_PAUSED), "events": []},
        {"paused": True},
    ),
    Case(
        "spec pause lifted: the rollout starts",
        [Tick(0, "v1"), Tick(10, "v2"), Tick(20, "v2", spec=deployment_spec(STEPS))],
        {"canary": "v2", "step": 0, "events": [api.REASON_CANARY]},
        {"paused": True},
    ),
    Case(
        "paused by hand: the step does not advance",
        [*START, Tick(20, "v2", action="pause/1"), Tick(100, "v2")],
        {"canary": "v2", "step": 0, "progressing": (UNKNOWN, api.REASON_PAUSED), "events": []},
    ),
    Case(
        "resumed by hand: the step advances",
        [*START, Tick(20, "v2", action="pause/1"), Tick(100, "v2", action="resume/2")],
        {
            "canary": "v2",
            "step": 1,
            "weight": 50,
            "events": [api.REASON_RESUMED, api.REASON_STEP_ADVANCED],
        },
    ),
    Case(
        "a pause never stops protecting",
        [*START, Tick(20, "v2", action="pause/1"), Tick(50, "v2", BAD_ERRORS)],
        {"canary": None, "degraded": (TRUE, api.REASON_ERROR_RATE_GATE)},
    ),
    Case(
        "abort by hand",
        [*START, Tick(20, "v2", action="abort/x")],
        {
            "stable": "v1",
            "canary": None,
            "rejected": "v2",
            "degraded": (FALSE, api.REASON_ABORTED),
            "progressing": (FALSE, "Aborted"),
            "events": [api.REASON_ABORTED],
            "history": [("v2", "Aborted")],
        },
    ),
    Case(
        "an action is applied exactly once",
        [
            *START,
            Tick(20, "v2", action="abort/x"),
            Tick(30, "v2", action="retry/y"),
            Tick(40, "v2", action="abort/x"),
        ],
        {"canary": "v2", "events": []},
    ),
    Case(
        "an action with nothing to act on is a warning",
        [Tick(0, "v1"), Tick(5, "v1", action="promote/1")],
        {"stable": "v1", "events": [api.REASON_ACTION_IGNORED]},
    ),
    Case(
        "an invalid action is a warning, given once",
        [Tick(0, "v1"), Tick(5, "v1", action="ship-it"), Tick(6, "v1", action="ship-it")],
        {"events": []},
    ),
    Case(
        "a newer model supersedes the canary",
        [*START, Tick(20, "v3")],
        {
            "canary": "v3",
            "step": 0,
            "rejected": None,
            "events": [api.REASON_SUPERSEDED, api.REASON_CANARY],
            "history": [("v2", "Aborted")],
        },
    ),
    Case(
        "selecting stable again ends the canary",
        [*START, Tick(20, "v1")],
        {"stable": "v1", "canary": None, "rejected": None, "events": [api.REASON_SUPERSEDED]},
    ),
    Case(
        "a selection that vanishes keeps what is served",
        [*START, Tick(20, None)],
        {"stable": "v1", "canary": "v2", "events": []},
    ),
    Case(
        "no steps: replaced at once",
        [Tick(0, "v1"), Tick(10, "v2")],
        {"stable": "v2", "canary": None, "events": [api.REASON_PROMOTED]},
        {"steps": ()},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rollout(case: Case) -> None:
    spec = deployment_spec(case.spec.pop("steps", STEPS), **case.spec)
    found = summary(run_ticks(spec, case.ticks)[-1])
    assert {key: found[key] for key in case.expect} == case.expect


def test_invalid_action_warns_once_with_the_reason() -> None:
    first, second = run_ticks(
        deployment_spec(STEPS), [Tick(0, "v1", action="ship-it"), Tick(1, "v1", action="ship-it")]
    )
    assert [(e.type, e.reason) for e in first.events] == [
        ("Warning", api.REASON_INVALID_ACTION),
        ("Normal", api.REASON_SERVING),
    ]
    assert "<action>/<nonce>" in first.events[0].message
    assert first.status.handled_actions == ["ship-it"] and second.events == []


def test_rollback_names_the_gate_in_reason_message_and_warning() -> None:
    *_, rolled = run_ticks(deployment_spec(STEPS), [*START, Tick(40, "v2", BAD_ERRORS)])
    event = rolled.events[0]
    assert (event.type, event.reason) == ("Warning", api.REASON_ERROR_RATE_GATE)
    assert "errorRate" in event.message and "serving v1" in event.message
    degraded = next(c for c in rolled.status.conditions if c.type == api.DEGRADED)
    assert degraded.message == event.message
    assert rolled.status.analysis is not None
    assert rolled.status.analysis.gates[0].name == "errorRate"
    assert rolled.status.analysis.gates[0].result == "Failed"
    assert any(g.failed for g in rolled.gates)


def test_requeue_follows_pauses_and_analysis() -> None:
    spec = deployment_spec(((10, 45), (50, 300)), intervalSeconds=30)
    served, started, early, late, advanced = run_ticks(
        spec, [Tick(0, "v1"), Tick(10, "v2"), Tick(40, "v2"), Tick(50, "v2"), Tick(56, "v2")]
    )
    assert served.requeue_seconds is None  # nothing to wait for
    assert started.requeue_seconds == 30  # first analysis before the 45 s pause ends
    assert early.requeue_seconds == 15  # the pause ends in 15 s: wake up then
    assert late.requeue_seconds == 5
    assert advanced.status.rollout_step == 1 and advanced.requeue_seconds == 30


def test_decide_is_pure_and_reports_no_change_when_settled() -> None:
    spec = deployment_spec(STEPS)
    first = decide(spec, api.BertDeploymentStatus(), "v1", healthy(), None, T0, generation=3)
    before = first.status.model_dump()
    again = decide(spec, first.status, "v1", healthy(), None, T0, generation=3)
    assert first.changed and not again.changed and again.events == []
    assert first.status.model_dump() == before  # the input status is never modified
    assert all(c.observed_generation == 3 for c in first.status.conditions)


def test_history_is_bounded() -> None:
    ticks = [Tick(0, "v0")]
    for i in range(1, 30):
        ticks += [Tick(i * 10, f"v{i}"), Tick(i * 10 + 1, f"v{i}", action=f"promote/{i}")]
    final = run_ticks(deployment_spec(STEPS), ticks)[-1].status
    assert final.stable_model == "v29"
    assert final.history is not None and len(final.history) == 20
    assert final.history[-1].model == "v29"


def test_handled_actions_are_a_short_memory() -> None:
    ticks = [Tick(0, "v1")] + [
        Tick(i, "v1", action=f"{'pause' if i % 2 else 'resume'}/{i}") for i in range(1, 13)
    ]
    final = run_ticks(deployment_spec(STEPS), ticks)[-1].status
    assert final.handled_actions == [f"{'pause' if i % 2 else 'resume'}/{i}" for i in range(3, 13)]
    assert final.paused_by_action is None  # the last one was a resume
