"""The demo's timeline: one line per state change across the four kinds, nothing when
nothing changed, and the series the report plots; driven by a fake kubectl."""

from __future__ import annotations

import json
from typing import Any

from bertops.cluster import demo_timeline


def _deployment(**status: Any) -> dict[str, Any]:
    return {"kind": "BertDeployment", "metadata": {"name": "sentiment"}, "status": status}


def _obj(
    kind: str, name: str, type_: str = "Ready", state: str = "Unknown", **status: Any
) -> dict[str, Any]:
    conditions = [{"type": type_, "status": state, "reason": status.pop("reason", "")}]
    return {
        "kind": kind,
        "metadata": {"name": name},
        "status": {"conditions": conditions, **status},
    }


DRIFT = {"lastCheck": "t1", "score": 0.83, "drifted": True, "reportUri": "/store/r1.html"}
RETRAIN = {
    "training": "sentiment-retrain-1",
    "dataset": "sentiment-retrain-1",
    "outcome": "Running",
}
TRAINED = {**RETRAIN, "outcome": "Trained", "model": "sentiment-r1"}
STEPS: list[tuple[dict[str, Any], list[dict[str, Any]], list[str]]] = [
    (
        _deployment(stableModel="sentiment-v1"),
        [
            _obj("BertDataset", "tweets", state="True"),
            _obj("BertModel", "sentiment-v1", state="True"),
        ],
        [
            "dataset tweets created",
            "dataset tweets ready",
            "model sentiment-v1 created",
            "model sentiment-v1 ready",
            "stable model sentiment-v1",
        ],
    ),
    (_deployment(stableModel="sentiment-v1"), [], []),  # nothing changed (objects kept below)
    (
        _deployment(
            stableModel="sentiment-v1",
            drift={**DRIFT, "score": 0.1, "drifted": False, "lastCheck": "t0"},
        ),
        [],
        ["drift check: score 0.10 (no drift) report /store/r1.html"],
    ),
    (
        _deployment(stableModel="sentiment-v1", drift=DRIFT, retrains={"history": [RETRAIN]}),
        [
            _obj(
                "BertTraining",
                "sentiment-retrain-1",
                "Succeeded",
                progress={"epoch": 1, "totalEpochs": 2, "loss": 0.9},
            )
        ],
        [
            "training sentiment-retrain-1 created",
            "training sentiment-retrain-1: epoch 1/2",
            "drift check: score 0.83 (drifted) report /store/r1.html",
            "retraining: dataset sentiment-retrain-1, training sentiment-retrain-1",
        ],
    ),
    (
        _deployment(
            stableModel="sentiment-v1",
            drift=DRIFT,
            retrains={"history": [TRAINED]},
            canaryModel="sentiment-r1",
            canaryWeight=10,
        ),
        [
            _obj(
                "BertTraining",
                "sentiment-retrain-1",
                "Succeeded",
                "True",
                progress={"epoch": 2, "totalEpochs": 2, "loss": 0.5},
                validationMetrics={"accuracy": 0.8},
            )
        ],
        [
            "training sentiment-retrain-1: epoch 2/2",
            "training sentiment-retrain-1 succeeded (validation accuracy 0.800)",
            "retraining sentiment-retrain-1: Trained (model sentiment-r1)",
            "canary sentiment-r1 at 10%",
        ],
    ),
    (
        _deployment(
            stableModel="sentiment-r1",
            drift=DRIFT,
            retrains={"history": [TRAINED]},
            history=[{"model": "sentiment-r1", "outcome": "Promoted", "at": "t"}],
        ),
        [],
        ["stable model sentiment-r1", "promoted sentiment-r1"],
    ),
]


class FakeKubectl:
    def __init__(self) -> None:
        self.deployment: dict[str, Any] | None = None
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, *args: str) -> str:
        self.calls.append(args)
        if args[1] == "bertdeployment":
            return json.dumps(self.deployment) if self.deployment else ""
        return json.dumps({"items": list(self.objects.values())})


def test_one_line_per_change_and_the_series() -> None:
    kubectl = FakeKubectl()
    now = [100.0]
    said: list[str] = []
    timeline = demo_timeline.Timeline(
        kubectl, "sentiment", say=said.append, clock=lambda: now[0], start=100.0
    )
    for step, (deployment, objects, expected) in enumerate(STEPS):
        kubectl.deployment = deployment
        kubectl.objects.update({o["metadata"]["name"] + o["kind"]: o for o in objects})
        now[0] = 100.0 + 30 * step
        stamp = demo_timeline.elapsed(30 * step)
        assert timeline.poll() == [f"{stamp} {line}" for line in expected], step
    assert said == timeline.lines and len(said) == sum(len(e) for _, _, e in STEPS)
    assert timeline.series["canaryWeight"] == [
        (0, 0),
        (30, 0),
        (60, 0),
        (90, 0),
        (120, 10),
        (150, 0),
    ]
    assert timeline.series["driftScore"] == [(60, 0.1), (90, 0.83)]
    assert timeline.series["trainingLoss/sentiment-retrain-1"] == [(90, 0.9), (120, 0.5)]
    assert kubectl.calls[1] == ("get", demo_timeline.KINDS, "-o", "json")


def test_failures_and_rollbacks_name_their_reason() -> None:
    old = demo_timeline.facts(
        _deployment(canaryModel="r2", canaryWeight=20), [_obj("BertTraining", "t", "Succeeded")]
    )
    new = demo_timeline.facts(
        _deployment(
            history=[{"model": "r2", "outcome": "RolledBack", "message": "error rate 0.4 > 0.05"}]
        ),
        [_obj("BertTraining", "t", "Succeeded", "False", reason="StepFailed")],
    )
    assert demo_timeline.changes(old, new) == [
        "training t: StepFailed",
        "rolled back r2: error rate 0.4 > 0.05",
    ]
    assert demo_timeline.changes(new, new) == []


def test_watch_stops_when_done_or_at_the_deadline() -> None:
    kubectl = FakeKubectl()
    timeline = demo_timeline.Timeline(kubectl, "sentiment", say=lambda _: None)
    polls = iter([False, True])
    assert timeline.watch(lambda: next(polls), timeout=5, interval=0)
    assert not timeline.watch(lambda: False, timeout=0, interval=0)
    assert demo_timeline.elapsed(3725) == "62:05"


def test_watch_shows_the_state_that_ended_it() -> None:
    """done() reads the cluster after the poll before it, so the promotion it saw must
    still become a line (a demo's timeline once ended at "canary ... at 60%")."""
    kubectl = FakeKubectl()
    kubectl.deployment = _deployment(stableModel="v1", canaryModel="r1", canaryWeight=60)
    timeline = demo_timeline.Timeline(kubectl, "sentiment", say=lambda _: None)

    def promoted_meanwhile() -> bool:
        history = [{"model": "r1", "outcome": "Promoted", "at": "t"}]
        kubectl.deployment = _deployment(stableModel="r1", history=history)
        return True

    assert timeline.watch(promoted_meanwhile, timeout=5, interval=0)
    assert [line.split(" ", 1)[1] for line in timeline.lines][-2:] == [
        "stable model r1",
        "promoted r1",
    ]


def test_the_judgment_shows_in_the_timeline() -> None:
    """The wait for labels, the offline evaluation with its numbers, and what a canary
    step holds for, each once."""
    waiting = _deployment(retrains={"waiting": {"needed": 200}})
    challenge = {"model": "r1", "stable": "v1", "phase": "Passed", "message": "0.60 vs 0.48"}
    holds = {
        "type": "Progressing",
        "status": "True",
        "reason": "NotYetSure",
        "message": "step 1/2 at 20% holds: pairedAccuracy: needs about 40 more",
    }
    judged = _deployment(challenge=challenge, canaryModel="r1", canaryWeight=20, conditions=[holds])
    steps = [
        (_deployment(), waiting, ["retraining waits for 200 new feedback labels"]),
        (
            waiting,
            _deployment(challenge={**challenge, "phase": "Running"}),
            ["offline evaluation of r1: Running"],
        ),
        (
            _deployment(challenge={**challenge, "phase": "Running"}),
            judged,
            [
                "offline evaluation of r1: Passed: 0.60 vs 0.48",
                "canary holds (NotYetSure): step 1/2 at 20% waits for pairedAccuracy",
                "canary r1 at 20%",
            ],
        ),
        (judged, judged, []),
    ]
    for old, new, expected in steps:
        assert (
            demo_timeline.changes(demo_timeline.facts(old, []), demo_timeline.facts(new, []))
            == expected
        )


def test_a_side_state_ends_every_line_and_its_change_is_a_line() -> None:
    """The node demo follows the Argo CD Applications beside the four kinds."""
    kubectl = FakeKubectl()
    side = ["argocd: sentiment OutOfSync"]
    timeline = demo_timeline.Timeline(
        kubectl, "sentiment", say=lambda _: None, clock=lambda: 0.0, start=0.0,
        side=lambda: side[0],
    )  # fmt: skip
    assert timeline.poll() == ["00:00 argocd: sentiment OutOfSync"]
    assert timeline.poll() == []  # nothing changed: no line
    kubectl.deployment = _deployment(stableModel="v1")
    side[0] = "argocd: sentiment Synced"
    assert timeline.poll() == [
        "00:00 stable model v1  | argocd: sentiment Synced",
        "00:00 argocd: sentiment Synced",
    ]
