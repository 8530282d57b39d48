"""Condition helpers: pure, clock injected, report whether anything changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bertops.api.meta import Condition, ConditionStatus, find_condition, set_condition

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def ready(status: str, reason: str = "Prepared", message: str = "ok", gen: int = 1) -> Condition:
    return Condition(
        type="Ready",
        status=ConditionStatus(status),
        reason=reason,
        message=message,
        last_transition_time=T0,
        observed_generation=gen,
    )


@pytest.mark.parametrize(
    ("existing", "args", "changed", "transition"),
    [
        ([], (True, "Prepared", "ok", 1), True, T1),
        ([ready("True")], (True, "Prepared", "ok", 1), False, T0),
        ([ready("True")], (True, "Prepared", "new message", 1), True, T0),
        ([ready("True")], (True, "Prepared", "ok", 2), True, T0),
        ([ready("True")], (False, "StepFailed", "boom", 1), True, T1),
        ([ready("False", "Preparing")], (ConditionStatus.UNKNOWN, "Preparing", "ok", 1), True, T1),
    ],
    ids=["new", "same", "message", "generation", "flip", "unknown"],
)
def test_set_condition(
    existing: list[Condition],
    args: tuple[ConditionStatus | bool, str, str, int],
    changed: bool,
    transition: datetime,
) -> None:
    status, reason, message, generation = args
    conditions = list(existing)
    assert (
        set_condition(conditions, "Ready", status, reason, message, now=T1, generation=generation)
        is changed
    )
    found = find_condition(conditions, "Ready")
    assert found is not None
    assert found.reason == reason and found.message == message
    assert found.last_transition_time == transition
    assert len(conditions) == 1


def test_other_types_untouched() -> None:
    conditions = [ready("True"), Condition(type="Progressing", status="False", reason="Idle")]
    set_condition(conditions, "Ready", False, "StepFailed", "x", now=T1)
    progressing = find_condition(conditions, "Progressing")
    assert progressing is not None
    assert progressing.reason == "Idle"
