"""The kubernetes runtime's reading of a finished Job, on plain Job and Pod dicts (no API
server): a completed Job is a success only with its own step's result in a termination
message; every other completed Job is a failed step with reason ResultUnreadable (never
retried, and named in the object's condition); a failed Job keeps its exit code, the
step's own message or the log tail FallbackToLogsOnError left instead."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from bertops.api.steps import StepResult
from bertops.operator.planners import dataset as dataset_planner
from bertops.operator.planners.common import plan_retry, step_name
from bertops.operator.runtime import manifests
from bertops.operator.runtime.base import REASON_RESULT_UNREADABLE, StepPhase
from bertops.operator.runtime.kubernetes import job_observation, read_termination, step_kind
from tests.operator import builders as b

JOB = step_name("obj", "prep", 1, "uid-obj")
OTHER = step_name("obj", "prep", 1, "uid-obj", attempt=2)
ENDED = "2026-11-28T12:00:00Z"
ADVICE = ("$BERTOPS_TERMINATION_LOG", f"see `kubectl logs job/{JOB}`")
GONE = "a new generation of the object runs the step again"
LOG_TAIL = (
    "Traceback (most recent call last):\n"
    '  File "/app/bertops/trainer/prepare.py", line 90, in run\n'
    "RuntimeError: tokenizer files missing\n"
)


def job(
    name: str = JOB, kind: str = "prepare", outcome: str = "", reason: str = ""
) -> dict[str, Any]:
    """A Job as the API server returns it; outcome "Complete", "Failed" or "" (running)."""
    status: dict[str, Any] = {"active": 1}
    if outcome:
        condition = {"type": outcome, "status": "True", "lastTransitionTime": ENDED}
        if reason:
            condition |= {"reason": reason, "message": "the step container failed"}
        status = {"conditions": [condition]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {"app.kubernetes.io/component": f"step-{kind}", manifests.STEP_LABEL: name},
        },
        "status": status,
    }


def pod(
    exit_code: int | None = 0, message: str | None = None, index: int = 0, suffix: str = "abcde"
) -> dict[str, Any]:
    """A step Pod; exit_code None: its container still runs (not terminated)."""
    state: dict[str, Any] = {"running": {"startedAt": ENDED}}
    if exit_code is not None:
        terminated: dict[str, Any] = {"exitCode": exit_code, "finishedAt": ENDED}
        if message is not None:
            terminated["message"] = message
        state = {"terminated": terminated}
    return {
        "metadata": {
            "name": f"{JOB}-{index}-{suffix}",
            "annotations": {manifests.COMPLETION_INDEX: str(index)},
            "labels": {manifests.STEP_LABEL: JOB},
        },
        "status": {"containerStatuses": [{"name": "step", "state": state}]},
    }


def result(name: str = JOB, kind: str = "prepare", succeeded: bool = True, **extra: Any) -> str:
    """A StepResult as the step writes it to its termination log."""
    return StepResult(kind=kind, name=name, succeeded=succeeded, **extra).compact_json()


@dataclass(frozen=True)
class Case:
    id: str
    job: dict[str, Any]
    pods: list[dict[str, Any]]
    phase: StepPhase
    reason: str = ""
    exit_code: int | None = None
    says: tuple[str, ...] = ()  # fragments of the observation's message
    result: bool = False  # the step's own result is carried along


CASES = [
    Case(
        "complete-valid",
        job(outcome="Complete"),
        [pod(0, result(artifacts={"dataset": "/store/ns/obj"}))],
        StepPhase.SUCCEEDED,
        exit_code=0,
        result=True,
    ),
    Case(
        "complete-rank0-result-behind-other-ranks",
        job(outcome="Complete"),
        [pod(0, None, index=1), pod(0, result(), index=0)],
        StepPhase.SUCCEEDED,
        exit_code=0,
        result=True,
    ),
    Case(
        "complete-no-pods",
        job(outcome="Complete"),
        [],
        StepPhase.FAILED,
        REASON_RESULT_UNREADABLE,
        0,
        (f"Job {JOB} completed but its step left no result: it has no pods left", GONE),
    ),
    Case(
        "complete-pod-not-terminated",
        job(outcome="Complete"),
        [pod(None)],
        StepPhase.FAILED,
        REASON_RESULT_UNREADABLE,
        0,
        ("none of its pods is left with a terminated container 'step'", GONE),
    ),
    Case(
        "complete-pod-without-message",
        job(outcome="Complete"),
        [pod(0, None)],
        StepPhase.FAILED,
        REASON_RESULT_UNREADABLE,
        0,
        (f"pod {JOB}-0-abcde left no termination message", *ADVICE),
    ),
    Case(
        "complete-empty-message",
        job(outcome="Complete"),
        [pod(0, "  \n")],
        StepPhase.FAILED,
        REASON_RESULT_UNREADABLE,
        0,
        ("left no termination message", *ADVICE),
    ),
    Case(
        "complete-garbage-message",
        job(outcome="Complete"),
        [pod(0, "all done, bye")],
        StepPhase.FAILED,
        REASON_RESULT_UNREADABLE,
        0,
        ("is not a StepResult", "'all done, bye'", *ADVICE),
    ),
    Case(
        "complete-json-not-a-result",
        job(outcome="Complete"),
        [pod(0, '{"succeeded": true}')],
        StepPhase.FAILED,
        REASON_RESULT_UNREADABLE,
        0,
        ("is not a StepResult", *ADVICE),
    ),
    Case(
        "complete-result-of-another-step",
        job(outcome="Complete"),
        [pod(0, result(name=OTHER))],
        StepPhase.FAILED,
        REASON_RESULT_UNREADABLE,
        0,
        (f"the result of another step (prepare {OTHER}, expected prepare {JOB})", *ADVICE),
    ),
    Case(
        "complete-result-of-another-kind",
        job(outcome="Complete"),
        [pod(0, result(kind="train"))],
        StepPhase.FAILED,
        REASON_RESULT_UNREADABLE,
        0,
        (f"the result of another step (train {JOB}, expected prepare {JOB})", *ADVICE),
    ),
    Case(
        "complete-own-result-not-succeeded",
        job(outcome="Complete"),
        [pod(0, result(succeeded=False, reason="Oops", message="half done"))],
        StepPhase.FAILED,
        REASON_RESULT_UNREADABLE,
        0,
        (
            f"Job {JOB} completed (exit 0) although its step's result says it did not "
            "succeed (Oops: half done)",
            ADVICE[1],
        ),
        result=True,
    ),
    Case(
        "failed-exit-2",
        job(outcome="Failed", reason="PodFailurePolicy"),
        [pod(2, result(succeeded=False, exit_code=2, reason="InvalidInput", message="no text"))],
        StepPhase.FAILED,
        exit_code=2,
        says=("no text",),
        result=True,
    ),
    Case(
        "failed-exit-2-pods-gone",
        job(outcome="Failed", reason="PodFailurePolicy"),
        [],
        StepPhase.FAILED,
        exit_code=2,
        says=("Job failed: PodFailurePolicy: the step container failed",),
    ),
    Case(
        "failed-spec-unreadable",  # the step could not read its spec, so not its name
        job(kind="train", outcome="Failed", reason="PodFailurePolicy"),
        [pod(2, result(name="unknown", succeeded=False, exit_code=2, message="bad spec"))],
        StepPhase.FAILED,
        exit_code=2,
        says=("bad spec",),
        result=True,
    ),
    Case(
        "failed-log-tail",
        job(outcome="Failed", reason="BackoffLimitExceeded"),
        [pod(1, LOG_TAIL)],
        StepPhase.FAILED,
        exit_code=1,
        says=(
            "Job failed: BackoffLimitExceeded: the step container failed; the step's last "
            "output: Traceback (most recent call last):",
            "RuntimeError: tokenizer files missing",
        ),
    ),
    Case(
        "failed-result-of-another-step",
        job(outcome="Failed", reason="BackoffLimitExceeded"),
        [pod(3, result(name=OTHER, succeeded=False, exit_code=3, message="not ours"))],
        StepPhase.FAILED,
        exit_code=3,
        says=("Job failed: BackoffLimitExceeded",),
    ),
    Case("running", job(), [pod(None)], StepPhase.RUNNING),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_job_and_its_pods_make_one_observation(case: Case) -> None:
    observed = job_observation(case.job, case.pods)
    assert observed.phase == case.phase
    assert observed.reason == case.reason
    assert observed.exit_code == case.exit_code
    for fragment in case.says:
        assert fragment in observed.message
    assert (observed.result is not None) is case.result
    if observed.result is not None:
        assert observed.result.exit_code == (case.exit_code or 0)
    if case.phase != StepPhase.RUNNING:
        assert observed.ended_at is not None and observed.ended_at.isoformat().startswith(
            "2026-11-28T12:00"
        )
    if case.reason == REASON_RESULT_UNREADABLE:  # final: never retried
        assert plan_retry(observed, 1, b.CONFIG, b.NOW) is None


def test_a_completed_job_without_a_result_ends_in_a_false_condition() -> None:
    """What the planners make of it: Ready False, reason ResultUnreadable with the
    runtime's message, no new attempt, and nothing more to do on the next tick."""
    observed = job_observation(job(outcome="Complete"), [pod(0, None)])
    status = {
        "observedGeneration": 1,
        "attempts": 1,
        "step": JOB,
        "conditions": [b.condition("Ready", "False", "Preparing").to_wire()],
    }
    plan = dataset_planner.plan(
        b.ref("BertDataset"), b.dataset(status), observed, config=b.CONFIG, now=b.NOW
    )
    assert plan.start is None and plan.status is not None
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", REASON_RESULT_UNREADABLE)
    assert ready["message"].startswith(f"Job {JOB} completed but its step left no result")
    again = dataset_planner.plan(
        b.ref("BertDataset"), b.dataset(plan.status), observed, config=b.CONFIG, now=b.NOW
    )
    assert again.empty


def test_only_the_first_problem_is_reported_and_a_later_rank_can_still_answer() -> None:
    reading = read_termination([pod(0, "garbage", index=0), pod(0, None, index=1)], JOB, "prepare")
    assert reading.result is None and reading.output == "garbage"
    assert reading.problem.startswith(f"the termination message of pod {JOB}-0-abcde")
    replaced = [pod(0, None, suffix="gone1"), pod(0, result(), suffix="again")]
    assert read_termination(replaced, JOB, "prepare").result is not None


@pytest.mark.parametrize(
    ("labels", "kind"),
    [
        ({"app.kubernetes.io/component": "step-train"}, "train"),
        ({"app.kubernetes.io/component": "server"}, None),
        ({}, None),
    ],
)
def test_the_step_kind_comes_from_the_component_label(
    labels: dict[str, str], kind: str | None
) -> None:
    assert step_kind({"metadata": {"name": JOB, "labels": labels}}) == kind


def test_an_unlabelled_job_checks_the_name_only() -> None:
    unlabelled = job(outcome="Complete")
    del unlabelled["metadata"]["labels"]
    assert job_observation(unlabelled, [pod(0, result(kind="train"))]).phase == StepPhase.SUCCEEDED
    other = job_observation(unlabelled, [pod(0, result(name=OTHER))])
    assert other.reason == REASON_RESULT_UNREADABLE
