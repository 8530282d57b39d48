"""The retraining's wait for feedback labels, driven through the drift monitor step
result by step result (the fakes of test_drift_monitor): drift found with few labels waits
for retrain.minFeedbackRows new ones, or until retrain.maxWaitSeconds passed; the wait
survives drift disappearing, ends when retraining is disabled, and a retraining that
cannot be built fails at the drift, not an hour later."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bertops.api import deployment as api
from bertops.operator.deployment.monitor import DriftMonitor
from bertops.operator.deployment.monitor_steps import MonitorPlan
from tests.operator.builders import running
from tests.operator.test_drift_monitor import (
    MODEL,
    REF,
    Clock,
    Runtime,
    check_due,
    drift_result,
    drifted_reason,
    reference_done,
    spec,
    world,
)

__all__ = ["world"]  # the fixture, shared with test_drift_monitor


def drifted(
    monitor: DriftMonitor,
    runtime: Runtime,
    clock: Clock,
    the_spec: api.BertDeploymentSpec,
    labels: float,
) -> tuple[api.BertDeploymentStatus, MonitorPlan]:
    """A reference, then a check that finds drift while the gateway counted ``labels``."""
    status = reference_done(monitor, runtime, the_spec)
    check_due(monitor, runtime, clock, status, the_spec, labels)
    runtime.observation = drift_result(0.8, True)
    out = monitor.plan(REF, the_spec, status, {"v1": MODEL}, feedback_labels=labels)
    runtime.observation = running()
    return status, out


def drifted_message(status: api.BertDeploymentStatus) -> str:
    return next(c.message for c in status.conditions if c.type == api.DRIFTED)


def drift_message(status: api.BertDeploymentStatus) -> str:
    assert status.drift is not None
    return status.drift.message or ""


def test_drift_waits_for_new_feedback_labels_then_retrains(world: Any) -> None:
    """Drift found while the gateway had 10 labels: nothing is created until 200 more
    arrived; meanwhile status says what it waits for, and further drifted checks start no
    second wait. The dataset holds the newest feedback out; the model is not shared."""
    monitor, runtime, clock = world
    the_spec = spec(minFeedbackRows=200, maxWaitSeconds=3600)
    status, out = drifted(monitor, runtime, clock, the_spec, 10)
    assert not out.create and status.retrains is not None
    wait = status.retrains.waiting
    assert wait is not None and (wait.baseline, wait.have, wait.needed) == (10, 0, 200)
    assert wait.deadline == clock.now + timedelta(hours=1)  # 12:01:01 + 1h
    note = "retraining waits for feedback: 0 of 200 new labels, until 13:01Z"
    assert [(e.reason, note in e.message) for e in out.events if "Retrain" in e.reason] == [
        (api.REASON_RETRAIN_WAITING, True)
    ]
    assert note in drift_message(status) and note in drifted_message(status)
    assert monitor.wait_seconds(status, 5) == 5  # labels are counted every poll

    clock.now += timedelta(seconds=5)
    out = monitor.plan(REF, the_spec, status, {"v1": MODEL}, feedback_labels=67)
    assert not out.create and not out.events and status.retrains.waiting is not None
    assert status.retrains.waiting.have == 57
    assert "57 of 200 new labels, until 13:01Z" in drifted_message(status)
    assert drift_message(status).count("retraining waits") == 1

    # Another drifted check meanwhile: the same wait goes on, its note after the new message.
    check_due(monitor, runtime, clock, status, the_spec, 120)
    runtime.observation = drift_result(0.9, True)
    out = monitor.plan(REF, the_spec, status, {"v1": MODEL}, feedback_labels=130)
    runtime.observation = running()
    assert not out.create and not any(e.reason.startswith("Retrain") for e in out.events)
    assert status.retrains.waiting is not None and status.retrains.waiting.have == 120
    assert drift_message(status).startswith("score 0.90")
    assert drift_message(status).endswith("120 of 200 new labels, until 13:01Z")

    clock.now += timedelta(seconds=5)
    out = monitor.plan(REF, the_spec, status, {"v1": MODEL}, feedback_labels=250)
    monitor.kube.apply(out.create)
    assert [c["kind"] for c in out.create] == ["BertDataset", "BertTraining"]
    (started,) = [e for e in out.events if e.reason == api.REASON_RETRAIN_STARTED]
    assert "240 new feedback labels arrived (200 needed)" in started.message
    assert status.retrains.waiting is None and status.retrains.active == "web-retrain-1"
    record = (status.retrains.history or [])[0]
    assert record.message == "240 new feedback labels arrived (200 needed)"
    assert "retraining waits" not in drift_message(status)
    assert "retraining waits" not in drifted_message(status)
    dataset, training = out.create
    (feedback,) = dataset["spec"]["additionalSources"]
    assert feedback["holdoutFraction"] == 0.2 and feedback["optional"] is True
    assert training["spec"]["trigger"]["shareWithFamily"] is False


def test_the_deadline_starts_the_retraining_with_what_exists(world: Any) -> None:
    monitor, runtime, clock = world
    the_spec = spec(minFeedbackRows=200, maxWaitSeconds=600)
    status, out = drifted(monitor, runtime, clock, the_spec, 10)
    assert not out.create
    for labels in (20.0, None, 57.0):  # an unreadable count changes nothing
        clock.now += timedelta(seconds=120)
        assert not monitor.plan(REF, the_spec, status, {"v1": MODEL}, feedback_labels=labels).create
    assert status.retrains is not None and status.retrains.waiting is not None
    assert status.retrains.waiting.have == 47
    clock.now += timedelta(seconds=241)  # past 12:11:01
    out = monitor.plan(REF, the_spec, status, {"v1": MODEL})
    assert [c["kind"] for c in out.create] == ["BertDataset", "BertTraining"]
    (started,) = [e for e in out.events if e.reason == api.REASON_RETRAIN_STARTED]
    words = "the wait for feedback ended at 12:11:01Z with 47 of 200 new labels"
    assert words in started.message and started.message.startswith("drift score 0.80")
    record = (status.retrains.history or [])[0]
    assert words in (record.message or "") and status.retrains.waiting is None


def test_drift_that_disappears_keeps_the_wait(world: Any) -> None:
    """The drift was real when found: a clean check meanwhile does not drop the wait."""
    monitor, runtime, clock = world
    the_spec = spec()
    status, _ = drifted(monitor, runtime, clock, the_spec, 0)
    check_due(monitor, runtime, clock, status, the_spec, 50)
    runtime.observation = drift_result(0.1, False)
    out = monitor.plan(REF, the_spec, status, {"v1": MODEL}, feedback_labels=50)
    assert drifted_reason(status) == ("False", api.REASON_NO_DRIFT) and not out.create
    assert status.retrains is not None and status.retrains.waiting is not None
    assert "50 of 200 new labels" in drifted_message(status)


def test_disabling_retraining_drops_the_wait(world: Any) -> None:
    monitor, runtime, clock = world
    status, _ = drifted(monitor, runtime, clock, spec(), 0)
    off = spec(enabled=False)
    out = monitor.plan(REF, off, status, {"v1": MODEL}, feedback_labels=5)
    assert not out.create and status.retrains is not None and status.retrains.waiting is None
    assert [e.reason for e in out.events] == [api.REASON_RETRAIN_SKIPPED]
    assert "retraining waits" not in drifted_message(status)


def test_a_retraining_that_cannot_be_built_fails_at_the_drift_not_after_the_wait(
    world: Any,
) -> None:
    monitor, runtime, clock = world
    del monitor.kube.objects[("BertTraining", "run")]
    status, out = drifted(monitor, runtime, clock, spec(), 0)
    assert status.retrains is None or status.retrains.waiting is None
    assert [e.reason for e in out.events if e.reason.startswith("Retrain")] == [
        api.REASON_RETRAIN_FAILED
    ]
    assert "BertTraining run not found" in drift_message(status)
