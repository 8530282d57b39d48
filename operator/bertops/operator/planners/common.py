"""Plan and helpers shared by the per-kind planners: deterministic step names, events,
condition transitions that also decide which Event to post."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from bertops.api.meta import Condition, ConditionStatus, find_condition, set_condition
from bertops.operator.runtime.base import StepRequest

MAX_NAME = 63


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Plan:
    """What a reconcile should do; empty means the object is settled."""

    status: dict[str, Any] | None = None  # the full new status (wire form), None: unchanged
    start: StepRequest | None = None
    stop: list[str] = field(default_factory=list)
    create: list[dict[str, Any]] = field(default_factory=list)  # child manifests
    events: list[Event] = field(default_factory=list)
    requeue: bool = False  # poll again (a step runs, or something is awaited)

    @property
    def empty(self) -> bool:
        return not (self.status or self.start or self.stop or self.create or self.events)


@dataclass(frozen=True)
class ObjectRef:
    """The identity fields a planner needs from metadata."""

    name: str
    namespace: str
    generation: int
    uid: str
    kind: str
    api_version: str = "bertops.io/v1alpha1"

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ObjectRef:
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            namespace=meta.get("namespace", "default"),
            generation=int(meta.get("generation", 1)),
            uid=meta.get("uid", ""),
            kind=body["kind"],
            api_version=body.get("apiVersion", "bertops.io/v1alpha1"),
        )

    def owner_reference(self, controller: bool = True) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": controller,
            "blockOwnerDeletion": True,
        }


def step_name(object_name: str, step: str, generation: int) -> str:
    """Deterministic step (and Job) name: the same object+generation always maps to the
    same step, so a restarted operator adopts instead of duplicating. Kept a DNS label."""
    name = f"{object_name}-{step}-g{generation}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{object_name[: MAX_NAME - len(step) - 15]}-{step}-{digest}-g{generation}"


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
    after = find_condition(conditions, type_)
    assert after is not None
    if old != (after.status, after.reason):
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
