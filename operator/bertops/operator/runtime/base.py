"""The runtime interface: start a step, observe it, stop it, remove it once finished,
clean up after its object.

A step is identified by a deterministic name (object, its UID, kind of step, generation,
attempt; see :func:`bertops.operator.planners.common.step_name`, which ends every name
with the owner's :func:`uid_tag`), so a restarted operator that asks for the same step
finds the running or finished one instead of starting a duplicate, and an object
re-created under the same name never meets its predecessor's steps. Implemented by
:mod:`.local` and :mod:`.kubernetes`; used by the reconcilers.

No runtime ever makes up a successful result: SUCCEEDED carries the step's own result
document, and a step that ended without a readable one is FAILED with
:data:`REASON_RESULT_UNREADABLE`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from bertops.api.steps import ProgressEvent, StepResult, StepSpec

REASON_RESULT_UNREADABLE = "ResultUnreadable"
"""The step ended, but its result document is missing or does not parse."""


UID_TAG = re.compile(r"-[0-9a-z]{8}$")
"""How a step name ends: its owner's :func:`uid_tag`, after a dash."""


def uid_tag(uid: str) -> str:
    """8 characters naming an object's UID, the end of each of its step names: the UID's
    first hex digits (what `kubectl get -o jsonpath={.metadata.uid}` starts with), or a
    digest when the UID is not a UUID."""
    digits = re.sub(r"[^0-9a-z]", "", uid.lower())
    return digits[:8] if len(digits) >= 8 else hashlib.sha256(uid.encode()).hexdigest()[:8]


class StepPhase(StrEnum):
    ABSENT = "Absent"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class StepConflictError(Exception):
    """A step of that name exists but is not ours to adopt (another owner, or being
    deleted): the reconcile is retried later instead of adopting or duplicating it."""


class RuntimeUnavailableError(Exception):
    """The runtime an object asks for cannot run anything on this cluster (for example
    Argo's CRDs are missing). Permanent until an admin acts: the reconciler reports
    ``reason`` and the message in the object's condition and checks again slowly, instead
    of raising into kopf's retry loop."""

    reason = "RuntimeUnavailable"


@dataclass(frozen=True)
class StepRequest:
    """Everything a runtime needs to run one step for one object."""

    name: str  # deterministic, a DNS label (also the Job name)
    namespace: str
    spec: StepSpec
    replicas: int = 1  # >1: torch.distributed ranks
    cpu: str = "1"
    memory: str = "2Gi"
    gpu: int = 0
    owner: dict[str, Any] = field(default_factory=dict)  # ownerReference of the object
    # Secrets (credentialsSecretRef) whose keys become the step's environment: by
    # reference (envFrom), so their values never enter a spec, ConfigMap or status.
    env_secrets: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def owner_uid(self) -> str:
        return str(self.owner.get("uid") or "")


@dataclass(frozen=True)
class StepObservation:
    phase: StepPhase
    result: StepResult | None = None
    progress: ProgressEvent | None = None
    message: str = ""
    reason: str = ""  # set by the runtime for failures it classifies itself
    exit_code: int | None = None  # of the step process, when it ended and is known
    ended_at: datetime | None = None  # when it ended, when known (retry backoff counts from it)
    # The runtime already retried the step itself (Argo's retryStrategy): a failure is
    # final, so the planner must not start another attempt on top.
    final: bool = False

    @property
    def effective_exit_code(self) -> int | None:
        """The exit code from the runtime, else the one in the step's result."""
        if self.exit_code is not None:
            return self.exit_code
        return self.result.exit_code if self.result is not None else None


def exited_ok(
    result: StepResult | None, ended_at: datetime | None, unreadable: str, *, final: bool = False
) -> StepObservation:
    """A step whose process (container, workflow node) ended with exit 0: succeeded only
    when its own result says so. Exit 0 without a successful result is a failure with
    reason ResultUnreadable and the runtime's ``unreadable`` advice; no runtime ever
    assumes a success."""
    if result is not None and result.succeeded:
        return StepObservation(StepPhase.SUCCEEDED, result=result, exit_code=0, ended_at=ended_at)
    return StepObservation(
        StepPhase.FAILED,
        result=result,
        reason=REASON_RESULT_UNREADABLE,
        exit_code=0,
        ended_at=ended_at,
        final=final,
        message=unreadable,
    )


class Runtime(Protocol):
    def start(self, request: StepRequest) -> None:
        """Start the step; a no-op when our step of that name already exists.

        Raises :class:`StepConflictError` when a step of that name exists but is not ours.
        """

    def observe(self, namespace: str, name: str, owner_uid: str = "") -> StepObservation:
        """Where the step stands (ABSENT when it was never started, or is not owner_uid's)."""

    def stop(self, namespace: str, name: str) -> bool:
        """Stop a running step; return whether one was running."""

    def remove(self, namespace: str, name: str) -> bool:
        """Remove a finished step and everything it left: its folder / its Job, pods
        (background propagation) and ConfigMap; False when there was none. A running step
        is not removed (False too): the caller removes only steps whose result it has
        already recorded."""

    def cleanup(self, namespace: str, owner_uid: str) -> list[str]:
        """Stop and remove every step of a deleted object; return the steps removed."""
