"""The kubernetes runtime: each step is a Job (plus its spec ConfigMap and, for N ranks,
a headless Service and a NetworkPolicy for the DDP port), applied with server-side apply
under deterministic names.

Observation reads the Job's conditions and the step container's termination message
(the compact StepResult the step writes to /dev/termination-log). An existing Job is
adopted only when it belongs to the requesting object (owner UID) and is not being
deleted. The Job itself never retries (backoffLimit 0): a failed attempt is retried by
the planners as a new step, the same way on both runtimes. Deleting an object needs no
finalizer here: every child carries an ownerReference, so the garbage collector removes
them. Used by the reconcilers through :class:`bertops.operator.runtime.base.Runtime`.
"""

from __future__ import annotations

import json
import logging
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


def termination_result(pods: list[dict[str, Any]]) -> StepResult | None:
    """The StepResult in a step container's termination message (rank 0 first)."""
    for pod_name, terminated in _terminated(pods):
        message = terminated.get("message")
        if not message:
            continue
        try:
            result = StepResult.model_validate(json.loads(message))
        except (ValueError, ValidationError):
            log.warning("unparseable termination message in pod %s", pod_name)
            continue
        return result.model_copy(update={"exit_code": terminated.get("exitCode", 0)})
    return None


def failed_exit_code(job: dict[str, Any], pods: list[dict[str, Any]]) -> int | None:
    """The exit code a failed Job's step ended with: the first non-zero one among its
    pods; when the pods are gone, a PodFailurePolicy failure means exit 2 (the only
    exit code our policy fails a Job for)."""
    for _, terminated in _terminated(pods):
        if terminated.get("exitCode"):
            return int(terminated["exitCode"])
    failed = _condition(job, "Failed") or {}
    return int(ExitCode.BAD_INPUT) if failed.get("reason") == "PodFailurePolicy" else None


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
        result = termination_result(pods)
        if (done := _condition(job, "Complete")) is not None:
            ended_at = _time(done.get("lastTransitionTime"))
            return exited_ok(
                result,
                ended_at,
                f"Job {name} completed but its step left no successful result in the "
                f"termination message of container 'step'; check `kubectl logs job/{name}` "
                "and that the image writes $BERTOPS_TERMINATION_LOG",
            )
        if (failed := _condition(job, "Failed")) is not None:
            message = f"Job failed: {failed.get('reason', '')}: {failed.get('message', '')}"
            if result is not None and result.message:
                message = result.message
            return StepObservation(
                StepPhase.FAILED,
                result=result,
                message=message,
                exit_code=failed_exit_code(job, pods),
                ended_at=_time(failed.get("lastTransitionTime")),
            )
        return StepObservation(StepPhase.RUNNING)

    def stop(self, namespace: str, name: str) -> bool:
        stopped = self.kube.delete("batch/v1", "Job", namespace, name)
        self.kube.delete("v1", "Service", namespace, name)
        self.kube.delete("networking.k8s.io/v1", "NetworkPolicy", namespace, name)
        self.kube.delete("v1", "ConfigMap", namespace, name)
        return stopped

    def cleanup(self, namespace: str, owner_uid: str) -> list[str]:
        """Nothing to do: the children's ownerReferences let the garbage collector
        remove them, so deletion needs no finalizer and no running operator."""
        return []
