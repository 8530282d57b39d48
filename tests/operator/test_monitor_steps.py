"""Which finished monitor steps of a deployment are removed (pure, table-driven), and that a
removal the runtime fails at is a warning, never an error of the reconcile."""

from __future__ import annotations

import logging

import pytest

from bertops.operator.deployment.monitor_steps import remove_superseded, superseded
from bertops.operator.objects import ObjectRef
from bertops.operator.planners.common import step_name
from bertops.operator.runtime.base import StepPhase

UID = "abcdef12-3456"
REF = ObjectRef(name="web", namespace="ns", generation=1, uid=UID, kind="BertDeployment")


def both(serial: int) -> list[str]:
    return [step_name("web", "drift", serial, UID), step_name("web", "ref", serial, UID)]


CASES = [
    # (what status names, how it was observed, what goes)
    ("the first step (a reference) finished", 1, StepPhase.SUCCEEDED, []),
    ("no step yet", None, StepPhase.SUCCEEDED, []),
    ("the second step still runs", 2, StepPhase.RUNNING, []),
    ("the second step finished", 2, StepPhase.SUCCEEDED, both(1)),
    ("check 7 failed", 7, StepPhase.FAILED, both(6)),
    ("check 7 vanished", 7, StepPhase.ABSENT, both(6)),
    ("check 7 runs", 7, StepPhase.RUNNING, []),
]


@pytest.mark.parametrize(("case", "serial", "phase", "removed"), CASES, ids=[c[0] for c in CASES])
def test_only_the_step_before_the_finished_one_goes(
    case: str, serial: int | None, phase: StepPhase, removed: list[str]
) -> None:
    assert superseded("web", UID, serial, phase) == removed


def test_names_are_the_monitors_own_and_never_a_training_steps() -> None:
    drift, ref = superseded("web", UID, 3, StepPhase.SUCCEEDED)
    assert drift.startswith("web-drift-g2-a1-") and ref.startswith("web-ref-g2-a1-")


class Runtime:
    """A fake: only the call remove_superseded makes of a Runtime (hence the
    ``type: ignore[arg-type]`` where it is passed for one)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.present = {step_name("web", "drift", 4, UID)}
        self.asked: list[str] = []

    def remove(self, namespace: str, name: str) -> bool:
        self.asked.append(name)
        if self.fail:
            raise OSError("read-only file system")
        if name in self.present:
            self.present.remove(name)
            return True
        return False


def test_the_step_that_exists_is_removed() -> None:
    runtime = Runtime()
    removed = remove_superseded(runtime, REF, 5, StepPhase.SUCCEEDED)  # type: ignore[arg-type]
    assert removed == [step_name("web", "drift", 4, UID)]
    assert runtime.asked == both(4) and not runtime.present


def test_a_failed_removal_is_a_warning_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    runtime = Runtime(fail=True)
    with caplog.at_level(logging.WARNING):
        removed = remove_superseded(runtime, REF, 5, StepPhase.FAILED)  # type: ignore[arg-type]
    assert removed == [] and runtime.asked == both(4)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "read-only file system" in warnings[0].getMessage()


def test_nothing_is_asked_of_the_runtime_while_the_step_runs() -> None:
    runtime = Runtime()
    assert remove_superseded(runtime, REF, 5, StepPhase.RUNNING) == []  # type: ignore[arg-type]
    assert runtime.asked == []
