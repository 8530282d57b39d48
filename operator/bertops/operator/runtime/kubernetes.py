"""The kubernetes runtime: each step is a Job (plus its spec ConfigMap and, for N ranks,
a headless Service), applied with server-side apply under deterministic names.

Observation reads the Job's conditions and the step container's termination message
(the compact StepResult the step writes to /dev/termination-log). Used by the
reconcilers through :class:`bertops.operator.runtime.base.Runtime`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError

from bertops.api.steps import StepResult
from bertops.operator.config import OperatorConfig
from bertops.operator.kube import Kube
from bertops.operator.runtime import manifests
from bertops.operator.runtime.base import StepObservation, StepPhase, StepRequest

log = logging.getLogger(__name__)


def _condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return condition
    return None


def termination_result(pods: list[dict[str, Any]]) -> StepResult | None:
    """The StepResult in a step container's termination message (rank 0 first)."""

    def index(pod: dict[str, Any]) -> int:
        annotations = pod.get("metadata", {}).get("annotations") or {}
        return int(annotations.get("batch.kubernetes.io/job-completion-index", 0))

    for pod in sorted(pods, key=index):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or {}
            message = terminated.get("message")
            if status.get("name") != "step" or not message:
                continue
            try:
                result = StepResult.model_validate(json.loads(message))
            except (ValueError, ValidationError):
                log.warning("unparseable termination message in pod %s", pod["metadata"]["name"])
                continue
            return result.model_copy(update={"exit_code": terminated.get("exitCode", 0)})
    return None


class KubernetesRuntime:
    def __init__(self, config: OperatorConfig, kube: Kube) -> None:
        self.config = config
        self.kube = kube

    def start(self, request: StepRequest) -> None:
        if self.kube.read("batch/v1", "Job", request.namespace, request.name) is not None:
            return  # adopt the existing Job: never a duplicate
        for manifest in manifests.children(request, self.config):
            self.kube.apply(manifest)

    def observe(self, namespace: str, name: str) -> StepObservation:
        job = self.kube.read("batch/v1", "Job", namespace, name)
        if job is None:
            return StepObservation(StepPhase.ABSENT)
        pods = self.kube.list_resources("v1", "Pod", namespace, f"{manifests.STEP_LABEL}={name}")
        result = termination_result(pods)
        if (done := _condition(job, "Complete")) is not None:
            if result is None:
                result = StepResult(
                    kind="train",
                    name=name,
                    succeeded=True,
                    message=done.get("message") or "Job complete",
                )
            return StepObservation(StepPhase.SUCCEEDED, result=result)
        if (failed := _condition(job, "Failed")) is not None:
            message = f"Job failed: {failed.get('reason', '')}: {failed.get('message', '')}"
            if result is not None and result.message:
                message = result.message
            return StepObservation(StepPhase.FAILED, result=result, message=message)
        return StepObservation(StepPhase.RUNNING)

    def stop(self, namespace: str, name: str) -> bool:
        stopped = self.kube.delete("batch/v1", "Job", namespace, name)
        self.kube.delete("v1", "Service", namespace, name)
        self.kube.delete("v1", "ConfigMap", namespace, name)
        return stopped

    def logs(self, namespace: str, name: str, lines: int = 50) -> str:
        pods = self.kube.list_resources("v1", "Pod", namespace, f"{manifests.STEP_LABEL}={name}")
        texts = []
        for pod in pods:
            try:
                texts.append(
                    self.kube.core.read_namespaced_pod_log(
                        pod["metadata"]["name"], namespace, container="step", tail_lines=lines
                    )
                )
            except Exception as error:  # no kubelet, pod gone: logs are best-effort
                texts.append(f"(no logs for {pod['metadata']['name']}: {error})")
        return "\n".join(texts)
