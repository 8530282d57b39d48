"""The kubernetes runtime: each step is a Job (plus its spec ConfigMap and, for N ranks,
a headless Service and a NetworkPolicy for the DDP port), applied with server-side apply
under deterministic names.

Observation reads the Job's conditions and the step container's termination message
(the compact StepResult the step writes to /dev/termination-log). A Job that completed
without a readable, successful result of its own step (no pod, no message, a message
that is not a StepResult, the result of another step) is a FAILED step with reason
ResultUnreadable, never a made-up success; see :func:`job_observation`. An existing Job is
adopted only when it belongs to the requesting object (owner UID) and is not being
deleted. The Job itself never retries (backoffLimit 0): a failed attempt is retried by
the planners as a new step, the same way on both runtimes. Deleting an object needs no
finalizer here: every child carries an ownerReference, so the garbage collector removes
them. Used by the reconcilers through :class:`bertops.operator.runtime.base.Runtime`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from bertops.api.steps import ExitCode, StepResult
from bertops.operator.config import OperatorConfig
from bertops.operator.kube import Kube
from bertops.operator.runtime import manifests
from bertops.operator.runtime.base import (
    StepConflictError,
    StepObservation,
    StepPhase,
    StepRequest,
    exited_ok,
)

log = logging.getLogger(__name__)
# What a step has beside its Job, each named as the Job (api version, kind).
STEP_COMPANIONS = (
    ("v1", "Service"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "ConfigMap"),
)

# The label manifests.labels() gives every child of a step: "step-<kind>".
COMPONENT_LABEL = "app.kubernetes.io/component"


def _condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return condition
    return None


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def owner_uids(obj: dict[str, Any]) -> set[str]:
    return {ref.get("uid", "") for ref in obj.get("metadata", {}).get("ownerReferences") or []}


def _terminated(pods: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(pod name, terminated state) of each step container, rank 0 first."""

    def index(pod: dict[str, Any]) -> int:
        annotations = pod.get("metadata", {}).get("annotations") or {}
        return int(annotations.get(manifests.COMPLETION_INDEX, 0))

    found = []
    for pod in sorted(pods, key=index):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated")
            if status.get("name") == "step" and terminated:
                found.append((pod["metadata"]["name"], terminated))
    return found


def step_kind(job: dict[str, Any]) -> str | None:
    """The kind of step a Job runs, from the component label :func:`manifests.labels`
    gives it (``step-<kind>``); None when the label is missing."""
    component = (job.get("metadata", {}).get("labels") or {}).get(COMPONENT_LABEL, "")
    return component.removeprefix("step-") if component.startswith("step-") else None


# The name a step gives its result when it could not read its own spec (see
# bertops.trainer.steps): a failure that still belongs to the step that ran it.
UNNAMED_RESULT = "unknown"


@dataclass(frozen=True)
class TerminationReading:
    """What the step containers' termination messages say about one step."""

    result: StepResult | None = None  # this step's own result, when one was readable
    problem: str = ""  # why none was (for the condition message), when result is None
    # A message that is not a result document: with FallbackToLogsOnError, the tail of
    # the log of a container that failed without writing its result.
    output: str = ""
    gone: bool = False  # no terminated step container was left to read at all


def read_termination(
    pods: list[dict[str, Any]], step: str, kind: str | None = None
) -> TerminationReading:
    """The StepResult of step ``step`` (of ``kind``, when known) in its containers'
    termination messages, rank 0 first (the only rank that writes one). A message that
    is not a StepResult, or the result of another step, is no result; the first such
    problem explains why none was read."""
    terminated = _terminated(pods)
    if not terminated:
        return TerminationReading(
            problem="none of its pods is left with a terminated container 'step'"
            if pods
            else "it has no pods left",
            gone=True,
        )
    problems: list[str] = []
    output = ""
    for pod_name, state in terminated:
        message = state.get("message")
        if not message or not str(message).strip():
            problems.append(f"pod {pod_name} left no termination message")
            continue
        try:
            result = StepResult.model_validate(json.loads(message))
        except (ValueError, ValidationError) as error:
            log.warning("termination message of pod %s is not a StepResult", pod_name)
            output = output or str(message)
            problems.append(
                f"the termination message of pod {pod_name} is not a StepResult "
                f"({_first_line(error)}): {_clip(str(message).strip(), 200)!r}"
            )
            continue
        unnamed = result.name == UNNAMED_RESULT and not result.succeeded
        if not unnamed and (result.name != step or (kind and result.kind != kind)):
            log.warning("pod %s carries the result of %s %s", pod_name, result.kind, result.name)
            problems.append(
                f"pod {pod_name} carries the result of another step "
                f"({result.kind} {result.name}, expected {kind or 'a step'} {step})"
            )
            continue
        return TerminationReading(
            result=result.model_copy(update={"exit_code": state.get("exitCode", 0)})
        )
    return TerminationReading(problem=problems[0], output=output)


def failed_exit_code(job: dict[str, Any], pods: list[dict[str, Any]]) -> int | None:
    """The exit code a failed Job's step ended with: the first non-zero one among its
    pods; when the pods are gone, a PodFailurePolicy failure means exit 2 (the only
    exit code our policy fails a Job for)."""
    for _, terminated in _terminated(pods):
        if terminated.get("exitCode"):
            return int(terminated["exitCode"])
    failed = _condition(job, "Failed") or {}
    return int(ExitCode.BAD_INPUT) if failed.get("reason") == "PodFailurePolicy" else None


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def unreadable_message(name: str, reading: TerminationReading) -> str:
    """The condition message for a Job that completed without a successful result of
    its own: what happened, then what to look at."""
    logs = f"see `kubectl logs job/{name}`"
    result = reading.result
    if result is not None:  # its own result, yet not a success: exit 0 contradicts it
        return (
            f"Job {name} completed (exit 0) although its step's result says it did not "
            f"succeed ({result.reason}: {_clip(result.message, 200)}); {logs}"
        )
    if reading.gone:
        return (
            f"Job {name} completed but its step left no result: {reading.problem} (removed "
            "before the operator read their termination message); a new generation of the "
            "object runs the step again"
        )
    return (
        f"Job {name} completed but its step left no result: {reading.problem}; the step "
        "image may be older than the operator (steps write their StepResult to "
        f"$BERTOPS_TERMINATION_LOG) or the step exited 0 before writing it; {logs}"
    )


def job_observation(job: dict[str, Any], pods: list[dict[str, Any]]) -> StepObservation:
    """Where a step stands, from its Job and the Job's pods (pure: no API calls).

    Complete: succeeded only with the step's own successful result; otherwise failed
    with reason ResultUnreadable (see :func:`exited_ok`), never a made-up success.
    Failed: the exit code from the pods (or the PodFailurePolicy), the message from the
    step's result, else the Job's condition plus the log tail the container left."""
    name = job["metadata"]["name"]
    reading = read_termination(pods, name, step_kind(job))
    result = reading.result
    if (done := _condition(job, "Complete")) is not None:
        ended_at = _time(done.get("lastTransitionTime"))
        return exited_ok(result, ended_at, unreadable_message(name, reading))
    if (failed := _condition(job, "Failed")) is not None:
        message = f"Job failed: {failed.get('reason', '')}: {failed.get('message', '')}"
        if result is not None and result.message:
            message = result.message
        elif result is None and reading.output.strip():
            message += f"; the step's last output: {_tail(reading.output)}"
        return StepObservation(
            StepPhase.FAILED,
            result=result,
            message=message,
            exit_code=failed_exit_code(job, pods),
            ended_at=_time(failed.get("lastTransitionTime")),
        )
    return StepObservation(StepPhase.RUNNING)


def _tail(output: str, limit: int = 400) -> str:
    """The end of a log tail, on one line (conditions are read in `kubectl describe`)."""
    text = " | ".join(line.strip() for line in output.strip().splitlines() if line.strip())
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class KubernetesRuntime:
    def __init__(self, config: OperatorConfig, kube: Kube) -> None:
        self.config = config
        self.kube = kube

    def start(self, request: StepRequest) -> None:
        job = self.kube.read("batch/v1", "Job", request.namespace, request.name)
        if job is not None:
            self._check_adoptable(job, request.owner_uid)
            return  # adopt the existing Job: never a duplicate
        for manifest in manifests.children(request, self.config):
            self.kube.apply(manifest)

    @staticmethod
    def _check_adoptable(job: dict[str, Any], owner_uid: str) -> None:
        name = job["metadata"]["name"]
        if job["metadata"].get("deletionTimestamp"):
            raise StepConflictError(f"Job {name} is being deleted; the step starts once it is gone")
        if owner_uid and owner_uid not in owner_uids(job):
            raise StepConflictError(
                f"Job {name} exists but is not owned by this object (uid {owner_uid}); "
                "delete it or rename the object"
            )

    def observe(self, namespace: str, name: str, owner_uid: str = "") -> StepObservation:
        job = self.kube.read("batch/v1", "Job", namespace, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return StepObservation(StepPhase.ABSENT)
        if owner_uid and owner_uid not in owner_uids(job):
            return StepObservation(StepPhase.ABSENT)  # not ours: start() reports the conflict
        pods = self.kube.list_resources("v1", "Pod", namespace, f"{manifests.STEP_LABEL}={name}")
        return job_observation(job, pods)

    def stop(self, namespace: str, name: str) -> bool:
        stopped = self.kube.delete("batch/v1", "Job", namespace, name)
        self._delete_companions(namespace, name)
        return stopped

    def _delete_companions(self, namespace: str, name: str) -> bool:
        """Delete what a step has beside its Job (named as it): the Service and
        NetworkPolicy of N ranks and the spec ConfigMap; whether any was there."""
        deleted = False
        for api_version, kind in STEP_COMPANIONS:
            deleted = self.kube.delete(api_version, kind, namespace, name) or deleted
        return deleted

    def remove(self, namespace: str, name: str) -> bool:
        """Delete a finished step's Job (its pods in the background), ConfigMap and, for N
        ranks, Service and NetworkPolicy. A Job without a Complete or Failed condition
        still runs and is left alone (False); a Job already gone (its TTL) has its
        leftovers deleted."""
        job = self.kube.read("batch/v1", "Job", namespace, name)
        if job is not None:
            if job["metadata"].get("deletionTimestamp"):
                return False  # being deleted already
            if _condition(job, "Complete") is None and _condition(job, "Failed") is None:
                log.debug("step %s/%s still runs: not removed", namespace, name)
                return False
            if not self.kube.delete("batch/v1", "Job", namespace, name, job["metadata"]["uid"]):
                return False  # gone, or re-created meanwhile: not the Job we judged
        removed = self._delete_companions(namespace, name) or job is not None
        if removed:
            log.debug("removed finished step %s/%s", namespace, name)
        return removed

    def cleanup(self, namespace: str, owner_uid: str) -> list[str]:
        """Nothing to do: the children's ownerReferences let the garbage collector
        remove them, so deletion needs no finalizer and no running operator."""
        return []
