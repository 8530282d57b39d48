"""The runtime interface: start a step, observe it, stop it, read its result.

A step is identified by a deterministic name (object, kind of step, generation), so a
restarted operator that asks for the same step finds the running or finished one
instead of starting a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from bertops.api.steps import ExitCode, ProgressEvent, StepResult, StepSpec


class StepPhase(StrEnum):
    ABSENT = "Absent"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


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

    @property
    def kind(self) -> str:
        return self.spec.kind


@dataclass(frozen=True)
class StepObservation:
    phase: StepPhase
    result: StepResult | None = None
    progress: ProgressEvent | None = None
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.phase in (StepPhase.SUCCEEDED, StepPhase.FAILED)

    @property
    def permanent_failure(self) -> bool:
        """A failure that retrying cannot fix (bad input)."""
        return (
            self.phase == StepPhase.FAILED
            and self.result is not None
            and self.result.exit_code == ExitCode.BAD_INPUT
        )


class Runtime(Protocol):
    def start(self, request: StepRequest) -> None:
        """Start the step; a no-op when a step of that name already exists."""

    def observe(self, namespace: str, name: str) -> StepObservation:
        """Where the step stands (ABSENT when it was never started)."""

    def stop(self, namespace: str, name: str) -> bool:
        """Stop a running step; return whether one was running."""

    def logs(self, namespace: str, name: str, lines: int = 50) -> str:
        """The step's last log lines, for messages and `bertops logs`."""
