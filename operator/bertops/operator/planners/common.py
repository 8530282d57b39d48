"""Helpers shared by the per-kind planners (the values they return, :class:`Plan` and the
rest, live in :mod:`bertops.operator.objects`): deterministic step names, condition
transitions that also decide which Event to post, and the retry policy for
failed steps (which attempt is current, whether and when to start the next one).

Pure: no I/O, the clock is an argument. Used by :mod:`.dataset`, :mod:`.training`,
:mod:`.model` and by the reconciler (to name the step it observes).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bertops.api.meta import Condition, ConditionStatus, find_condition, set_condition
from bertops.api.steps import ExitCode
from bertops.operator.config import OperatorConfig
from bertops.operator.objects import Event, ObjectRef
from bertops.operator.runtime.base import (
    REASON_RESULT_UNREADABLE,
    StepObservation,
    uid_tag,
)

# A DNS label is at most 63 characters; an Indexed Job's pods are named
# <job>-<index> (their hostnames, which ranks resolve), so leave room for "-NNNNN".
MAX_STEP_NAME = 57
REASON_RETRYING = "Retrying"


def step_name(object_name: str, step: str, generation: int, uid: str, attempt: int = 1) -> str:
    """Deterministic step (and Job) name, a DNS label: the same object, generation and
    attempt always map to the same step, so a restarted operator adopts instead of
    duplicating; the UID makes an object re-created under the same name a stranger to
    its predecessor's steps."""
    tail = f"-{step}-g{generation}-a{attempt}-{uid_tag(uid)}"
    # Object names may be DNS subdomains (dots); step names must be labels.
    head = re.sub(r"[^a-z0-9-]+", "-", object_name.lower()).strip("-") or "x"
    if len(head) + len(tail) > MAX_STEP_NAME:
        digest = hashlib.sha256(object_name.encode()).hexdigest()[:6]
        keep = max(MAX_STEP_NAME - len(tail) - len(digest) - 1, 1)
        head = f"{head[:keep].rstrip('-') or 'x'}-{digest}"
    return f"{head}{tail}"[:MAX_STEP_NAME].rstrip("-")


def current_attempt(observed_generation: int | None, attempts: int | None, generation: int) -> int:
    """The attempt the status points at: a new generation starts again at 1."""
    if observed_generation != generation or not attempts:
        return 1
    return attempts


def current_step(ref: ObjectRef, step: str, status: Any) -> str:
    """The step the object's status points at (what the reconciler observes)."""
    attempt = current_attempt(status.observed_generation, status.attempts, ref.generation)
    return step_name(ref.name, step, ref.generation, ref.uid, attempt)


@dataclass(frozen=True)
class Retry:
    """A failed attempt that will be retried: which attempt is next and when."""

    attempt: int  # the next attempt
    due: bool
    message: str  # for the condition while waiting (stable, so no status churn)


def backoff_seconds(failed_attempt: int, config: OperatorConfig) -> float:
    """Exponential backoff after the n-th failed attempt, capped."""
    delay = config.step_retry_base_seconds * 2 ** (failed_attempt - 1)
    return float(min(delay, config.step_retry_max_seconds))


def plan_retry(
    observed: StepObservation, attempt: int, config: OperatorConfig, now: datetime
) -> Retry | None:
    """Whether a failed attempt is retried (the step contract: exit codes 1 and 3, and a
    step that vanished or was killed, are; 2 (bad input), an unreadable result and a
    failure the runtime already retried itself are not) and when. None: the failure is
    final."""
    code = observed.effective_exit_code
    if code == ExitCode.BAD_INPUT or observed.reason == REASON_RESULT_UNREADABLE:
        return None
    if observed.final:  # the runtime spent its own retries: never stacked on top
        return None
    if attempt >= config.step_max_attempts:
        return None
    # Counted from when the attempt ended; unknown: retry now.
    due_at = (observed.ended_at or now) + timedelta(seconds=backoff_seconds(attempt, config))
    what = f"exit code {code}" if code is not None else "no exit code"
    message = (
        f"attempt {attempt} of {config.step_max_attempts} failed "
        f"({short(observed.message or what, 300)}); attempt {attempt + 1} starts at "
        f"{due_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
    )
    return Retry(attempt=attempt + 1, due=now >= due_at, message=message)


def note_retry(conditions: list[Condition], type_: str, retry: Retry, events: list[Event]) -> None:
    """A retry that starts at once still gets its Warning Event. When the backoff had
    already passed by the time the failure was seen, the condition goes straight from
    the step's running reason back to itself (no change, so `transition` posts nothing)
    and the failed attempt would be invisible. Nothing is posted when the condition
    already says Retrying: that wait posted the Event."""
    current = find_condition(conditions, type_)
    if current is None or current.reason != REASON_RETRYING:
        events.append(Event("Warning", REASON_RETRYING, retry.message))


def transition(
    conditions: list[Condition],
    type_: str,
    status: bool | ConditionStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int,
    events: list[Event],
    warning: bool = False,
) -> bool:
    """Set a condition and, when its status or reason changed, queue one Event for it
    (message-only updates, such as progress, post no Event)."""
    before = find_condition(conditions, type_)
    old = (before.status, before.reason) if before else None
    changed = set_condition(
        conditions, type_, status, reason, message, now=now, generation=generation
    )
    after = find_condition(conditions, type_)  # set_condition always leaves one
    if after is None or old != (after.status, after.reason):
        events.append(Event("Warning" if warning else "Normal", reason, message))
    return changed


def settled(
    observed_generation: int | None,
    conditions: list[Condition],
    type_: str,
    final_reasons: set[str],
    generation: int,
) -> bool:
    """This generation already reached a final outcome: nothing left to observe, so a
    timer tick costs one GET and no status write."""
    found = find_condition(conditions, type_)
    return (
        observed_generation == generation
        and found is not None
        and found.reason in final_reasons
        and found.observed_generation == generation
    )


def short(text: str, limit: int = 900) -> str:
    """Condition messages stay readable in `kubectl describe`."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
