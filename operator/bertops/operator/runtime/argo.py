"""A :class:`bertops.operator.runtime.base.Runtime` whose steps are Argo Workflows: ``start``
creates the Workflow :func:`bertops.operator.runtime.argo_workflow.workflow` builds for the step
(owned by the step's object, so deleting the object deletes it), ``observe`` maps the
Workflow's phase and its step nodes (exit code, output parameter ``result``) to a
:class:`StepObservation`, ``stop`` deletes it, ``remove`` deletes a finished one.

The reconciler picks it for objects with ``engine: argo`` (built once in run.py beside the
native runtime). Argo retries exit codes 1 and 3 itself (the Workflow's
``retryStrategy``), so every failure observed here is ``final``: the planners never start
another attempt on top. Tested against the embedded API server with Argo's CRDs and
workflow controller (tests/operator/test_argo_cluster.py, test_argo_operator.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kubernetes.dynamic.exceptions import ResourceNotFoundError
from pydantic import ValidationError

from bertops.api.steps import StepResult
from bertops.operator.config import OperatorConfig
from bertops.operator.kube import Kube
from bertops.operator.runtime import argo_workflow as workflows
from bertops.operator.runtime.base import (
    RuntimeUnavailableError,
    StepConflictError,
    StepObservation,
    StepPhase,
    StepRequest,
    exited_ok,
)

REASON_ARGO_NOT_INSTALLED = "ArgoNotInstalled"
RUNNING_PHASES = ("", "Pending", "Running")


class ArgoNotInstalledError(RuntimeUnavailableError):
    """The API server serves no ``argoproj.io/v1alpha1`` Workflow: Argo's CRDs are missing.
    Permanent until an admin installs Argo Workflows; the message says so."""

    reason = REASON_ARGO_NOT_INSTALLED


def _owner_uids(obj: dict[str, Any]) -> set[str]:
    return {ref.get("uid", "") for ref in obj["metadata"].get("ownerReferences") or []}


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def step_nodes(workflow: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The Workflow's pod nodes running ``kind``'s template, oldest first."""
    nodes = (workflow.get("status") or {}).get("nodes") or {}
    found = [n for n in nodes.values() if n.get("type") == "Pod" and n.get("templateName") == kind]
    return sorted(found, key=lambda n: str(n.get("startedAt") or ""))


def _output(node: dict[str, Any], name: str) -> str:
    for parameter in (node.get("outputs") or {}).get("parameters") or []:
        if parameter.get("name") == name:
            return str(parameter.get("value") or "")
    return ""


def node_result(nodes: list[dict[str, Any]]) -> StepResult | None:
    """The newest parseable ``result`` output (rank 0's: other ranks leave it empty)."""
    for node in reversed(nodes):
        if text := _output(node, "result"):
            try:
                return StepResult.model_validate_json(text)
            except ValidationError:
                continue
    return None


def node_exit_code(nodes: list[dict[str, Any]]) -> int | None:
    for node in reversed(nodes):
        code = (node.get("outputs") or {}).get("exitCode")
        if code not in (None, ""):
            return int(code)
    return None


def observation(workflow: dict[str, Any], kind: str) -> StepObservation:
    """Pure: where the Workflow running ``kind`` stands."""
    status = workflow.get("status") or {}
    phase = status.get("phase") or ""
    if phase in RUNNING_PHASES:
        return StepObservation(StepPhase.RUNNING, message=status.get("message") or "")
    nodes = step_nodes(workflow, kind)
    result, ended_at = node_result(nodes), _time(status.get("finishedAt"))
    if phase == "Succeeded":
        return exited_ok(
            result,
            ended_at,
            f"Workflow {workflow['metadata']['name']} succeeded but its {kind} node "
            "left no successful result in output parameter 'result'",
            final=True,
        )
    message = (result.message if result is not None else "") or status.get("message") or phase
    return StepObservation(
        StepPhase.FAILED,
        result=result,
        message=f"Workflow {phase.lower()}: {message}",
        exit_code=node_exit_code(nodes),
        ended_at=ended_at,
        final=True,  # Argo's retryStrategy already ran the attempts
    )


class ArgoRuntime:
    def __init__(self, config: OperatorConfig, kube: Kube) -> None:
        self.config = config
        self.kube = kube

    def _read(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.kube.read(workflows.API_VERSION, "Workflow", namespace, name)
        except ResourceNotFoundError as error:
            raise ArgoNotInstalledError(
                "spec.engine 'argo' needs Argo Workflows: this cluster serves no "
                f"{workflows.API_VERSION} Workflow (install Argo Workflows' CRDs and controller)"
            ) from error

    def start(self, request: StepRequest) -> None:
        existing = self._read(request.namespace, request.name)
        if existing is not None:
            if existing["metadata"].get("deletionTimestamp") or (
                request.owner_uid and request.owner_uid not in _owner_uids(existing)
            ):
                raise StepConflictError(
                    f"Workflow {request.name} exists but is being deleted or not owned by "
                    f"this object (uid {request.owner_uid})"
                )
            return  # adopt ours: never a duplicate
        body = workflows.workflow(
            request.name, request.namespace, [request], self.config, request.owner
        )
        self.kube.apply(workflows.to_dict(body))

    def observe(self, namespace: str, name: str, owner_uid: str = "") -> StepObservation:
        workflow = self._read(namespace, name)
        if workflow is None or workflow["metadata"].get("deletionTimestamp"):
            return StepObservation(StepPhase.ABSENT)
        if owner_uid and owner_uid not in _owner_uids(workflow):
            return StepObservation(StepPhase.ABSENT)
        kind = str(workflow["metadata"].get("labels", {}).get(workflows.STEP_KIND_LABEL, ""))
        return observation(workflow, kind)

    def stop(self, namespace: str, name: str) -> bool:
        return self.kube.delete(workflows.API_VERSION, "Workflow", namespace, name)

    def remove(self, namespace: str, name: str) -> bool:
        """Delete a finished step's Workflow (its pods and rendezvous Service go with it,
        in the background); a Workflow still running is left alone (False)."""
        workflow = self._read(namespace, name)
        if workflow is None or workflow["metadata"].get("deletionTimestamp"):
            return False
        if ((workflow.get("status") or {}).get("phase") or "") in RUNNING_PHASES:
            return False
        uid = workflow["metadata"]["uid"]
        return self.kube.delete(workflows.API_VERSION, "Workflow", namespace, name, uid)

    def cleanup(self, namespace: str, owner_uid: str) -> list[str]:
        """Nothing to do: the Workflow's ownerReference lets the garbage collector remove it
        (and the rendezvous Service, which the Workflow owns)."""
        return []
