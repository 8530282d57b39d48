"""The retry policy of failed steps, on the pure planners: exit codes 1 and 3 are retried
as a new step ("-a<n>") after exponential backoff, up to the configured attempts, and the
count shows in status.attempts; exit code 2 and an unreadable result never are."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from bertops.operator.planners import dataset as dataset_planner
from bertops.operator.planners import model as model_planner
from bertops.operator.planners import training as training_planner
from bertops.operator.planners.common import backoff_seconds, plan_retry, step_name
from bertops.operator.runtime.base import REASON_RESULT_UNREADABLE, StepObservation, StepPhase
from tests.operator import builders as b

CONFIG = replace(
    b.CONFIG,
    step_max_attempts=3,
    step_retry_base_seconds=10,
    step_retry_max_seconds=25,
    allowed_uri_prefixes=("/data", "/store"),
)


def cond(plan: Any, type_: str) -> tuple[str, str, str]:
    found = next(c for c in plan.status["conditions"] if c["type"] == type_)
    return found["status"], found["reason"], found["message"]


def dataset_status(attempts: int, generation: int = 1) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "attempts": attempts,
        "step": step_name("obj", "prep", generation, "uid-obj", attempts),
        "conditions": [b.condition("Ready", "False", "Preparing", generation).to_wire()],
    }


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_seconds(n, CONFIG) for n in (1, 2, 3, 4)] == [10, 20, 25, 25]


@pytest.mark.parametrize(
    ("observed", "attempt", "retried"),
    [
        (b.failed("prepare", 1, "bug"), 1, True),
        (b.failed("prepare", 3, "storage hiccup"), 2, True),
        (StepObservation(StepPhase.FAILED, message="vanished"), 1, True),  # host died
        (StepObservation(StepPhase.FAILED, exit_code=137, message="OOMKilled"), 1, True),
        (b.failed("prepare", 2, "bad column"), 1, False),
        (StepObservation(StepPhase.FAILED, exit_code=2, message="pods gone"), 1, False),
        (StepObservation(StepPhase.FAILED, reason=REASON_RESULT_UNREADABLE, exit_code=0), 1, False),
        (b.failed("prepare", 3, "storage hiccup"), 3, False),  # attempts spent
    ],
    ids=[
        "exit-1",
        "exit-3",
        "vanished",
        "killed",
        "exit-2",
        "exit-2-no-result",
        "unreadable",
        "spent",
    ],
)
def test_which_failures_are_retried(observed: StepObservation, attempt: int, retried: bool) -> None:
    assert (plan_retry(observed, attempt, CONFIG, b.NOW) is not None) is retried


def test_dataset_waits_for_the_backoff_then_starts_the_next_attempt() -> None:
    failed = b.failed("prepare", 3, "storage hiccup", ended_at=b.NOW)
    ref, obj = b.ref("BertDataset"), b.dataset(dataset_status(1))

    waiting = dataset_planner.plan(
        ref, obj, failed, config=CONFIG, now=b.NOW + timedelta(seconds=9)
    )
    status, reason, message = cond(waiting, "Ready")
    assert (status, reason, waiting.start) == ("False", "Retrying", None)
    assert "attempt 1 of 3 failed (storage hiccup)" in message
    assert "attempt 2 starts at 2026-11-28T12:00:10Z" in message
    assert [(e.type, e.reason) for e in waiting.events] == [("Warning", "Retrying")]
    # A later poll while still waiting writes nothing: the message names a time, not a countdown.
    again = dataset_planner.plan(
        ref, b.dataset(waiting.status), failed, config=CONFIG, now=b.NOW + timedelta(seconds=9.5)
    )
    assert again.empty

    due = dataset_planner.plan(ref, obj, failed, config=CONFIG, now=b.NOW + timedelta(seconds=10))
    second = step_name("obj", "prep", 1, "uid-obj", 2)
    assert due.start is not None and due.start.name == second and due.start.spec.name == second
    assert due.status is not None
    assert due.status["attempts"] == 2 and due.status["step"] == second
    assert cond(due, "Ready")[:2] == ("False", "Preparing")


def test_a_retry_due_when_the_failure_is_first_seen_still_posts_its_event() -> None:
    # A busy operator may see the failure only after the backoff has passed: the next
    # attempt starts at once, Ready stays Preparing (no transition), and the failed attempt
    # must still show as a Warning Event.
    failed = b.failed("prepare", 3, "storage hiccup", ended_at=b.NOW)
    ref, obj = b.ref("BertDataset"), b.dataset(dataset_status(1))
    due = dataset_planner.plan(ref, obj, failed, config=CONFIG, now=b.NOW + timedelta(seconds=60))
    assert due.status is not None
    assert due.start is not None and due.status["attempts"] == 2
    retrying = [e for e in due.events if e.reason == "Retrying"]
    assert [(e.type, e.message.split(";")[0]) for e in retrying] == [
        ("Warning", "attempt 1 of 3 failed (storage hiccup)")
    ]
    # After a visible wait (Ready says Retrying, whose transition posted the Event), the
    # start posts no second one.
    waited = b.dataset(
        dataset_status(1) | {"conditions": [b.condition("Ready", "False", "Retrying", 1).to_wire()]}
    )
    started = dataset_planner.plan(
        ref, waited, failed, config=CONFIG, now=b.NOW + timedelta(seconds=60)
    )
    assert started.start is not None
    assert [e.reason for e in started.events if e.reason == "Retrying"] == []


def test_dataset_gives_up_after_the_last_attempt() -> None:
    plan = dataset_planner.plan(
        b.ref("BertDataset"),
        b.dataset(dataset_status(3)),
        b.failed("prepare", 1, "Traceback: boom"),
        config=CONFIG,
        now=b.NOW + timedelta(hours=1),
    )
    assert plan.status is not None
    assert plan.start is None and plan.status["attempts"] == 3
    status, reason, message = cond(plan, "Ready")
    assert (status, reason) == ("False", "StepFailed")
    assert "gave up after 3 attempts" in message


def test_bad_input_is_never_retried() -> None:
    plan = dataset_planner.plan(
        b.ref("BertDataset"),
        b.dataset(dataset_status(1)),
        b.failed("prepare", 2, "column 'text' not found"),
        config=CONFIG,
        now=b.NOW + timedelta(hours=1),
    )
    assert plan.start is None and cond(plan, "Ready")[:2] == ("False", "InvalidData")
    assert plan.status is not None
    assert plan.status["attempts"] == 1


def test_unreadable_result_is_final_and_named() -> None:
    observed = StepObservation(
        StepPhase.FAILED,
        reason=REASON_RESULT_UNREADABLE,
        exit_code=0,
        message="Job x completed but its step left no successful result",
    )
    plan = dataset_planner.plan(
        b.ref("BertDataset"), b.dataset(dataset_status(1)), observed, config=CONFIG, now=b.NOW
    )
    assert plan.start is None and cond(plan, "Ready")[:2] == ("False", "ResultUnreadable")
    settled = dataset_planner.plan(
        b.ref("BertDataset"), b.dataset(plan.status), observed, config=CONFIG, now=b.NOW
    )
    assert settled.empty


def test_a_new_generation_counts_attempts_afresh() -> None:
    plan = dataset_planner.plan(
        b.ref("BertDataset", generation=2),
        b.dataset(dataset_status(3)),
        b.absent(),
        config=CONFIG,
        now=b.NOW,
    )
    assert plan.start is not None and plan.start.name == step_name("obj", "prep", 2, "uid-obj", 1)
    assert plan.status is not None
    assert plan.status["attempts"] == 1
    assert plan.stop == [step_name("obj", "prep", 1, "uid-obj", 3)]


def test_training_retries_a_transient_failure() -> None:
    status = {
        "observedGeneration": 1,
        "attempts": 1,
        "step": step_name("run", "train", 1, "uid-run", 1),
        "conditions": [b.condition("Succeeded", "Unknown", "Training").to_wire()],
    }
    failed = b.failed("train", 3, "peer rank lost", ended_at=b.NOW)
    kwargs: dict[str, Any] = {"model_exists": False, "config": CONFIG}
    ref, obj = b.ref("BertTraining", "run"), b.training(status)
    waiting = training_planner.plan(ref, obj, b.ready_dataset(), failed, now=b.NOW, **kwargs)
    assert cond(waiting, "Succeeded")[:2] == ("Unknown", "Retrying")
    assert cond(waiting, "Progressing")[0] == "True"
    due = training_planner.plan(
        ref, obj, b.ready_dataset(), failed, now=b.NOW + timedelta(seconds=10), **kwargs
    )
    assert due.start is not None and due.start.name == step_name("run", "train", 1, "uid-run", 2)
    assert due.status is not None
    assert due.status["attempts"] == 2


def test_a_failure_the_runtime_retried_itself_is_final() -> None:
    """Argo already ran its retryStrategy: exit code 3 there is not retried on top."""
    status = {
        "observedGeneration": 1,
        "attempts": 1,
        "step": step_name("run", "train", 1, "uid-run", 1),
        "conditions": [b.condition("Succeeded", "Unknown", "Training").to_wire()],
    }
    failed = replace(b.failed("train", 3, "peer rank lost", ended_at=b.NOW), final=True)
    ref, obj = b.ref("BertTraining", "run"), b.training(status, engine="argo")
    later = b.NOW + timedelta(seconds=600)
    plan = training_planner.plan(
        ref, obj, b.ready_dataset(), failed, model_exists=False, config=CONFIG, now=later
    )
    assert plan.start is None
    assert cond(plan, "Succeeded")[:2] == ("False", "StepFailed")


def test_training_waiting_for_its_dataset_claims_no_attempt() -> None:
    plan = training_planner.plan(
        b.ref("BertTraining", "run"),
        b.training(),
        None,
        b.absent(),
        model_exists=False,
        config=CONFIG,
        now=b.NOW,
    )
    assert plan.status is not None
    assert "attempts" not in plan.status


def test_evaluation_retries_a_transient_failure() -> None:
    status = {
        "observedGeneration": 1,
        "attempts": 1,
        "step": step_name("m", "eval", 1, "uid-m", 1),
        "conditions": [b.condition("Ready", "Unknown", "Evaluating").to_wire()],
    }
    obj = b.model(status, artifactUri="/store/m", evaluationDatasetRef={"name": "tweets"})
    world = model_planner.ModelWorld(
        dataset_uri="/store/d", step=b.failed("evaluate", 1, "bug", ended_at=b.NOW)
    )
    plan = model_planner.plan(
        b.ref("BertModel", "m"), obj, world, config=CONFIG, now=b.NOW + timedelta(seconds=10)
    )
    assert plan.start is not None and plan.start.name == step_name("m", "eval", 1, "uid-m", 2)
    assert plan.status is not None
    assert plan.status["attempts"] == 2
