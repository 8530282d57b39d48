"""Objects the operator refuses to act on, and why: a stored object that does not parse as
its API type (:class:`InvalidObjectError`), and the plan that says so in the object's
main condition (:func:`refused`, also used when the object's runtime is not available).

Used by :class:`bertops.operator.reconcile.Reconciler` (and, through its ``parse``, the
deployment reconciler); :mod:`bertops.operator.handlers` turns an InvalidObjectError that
escapes into kopf's PermanentError. No I/O.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from bertops.api import training as training_api
from bertops.api.meta import Condition
from bertops.operator.objects import ObjectRef, Plan
from bertops.operator.planners.common import short, transition

# The condition that carries each kind's outcome (InvalidSpec goes there).
MAIN_CONDITION = {"BertTraining": training_api.SUCCEEDED}


class InvalidObjectError(Exception):
    """A stored object does not parse as its API type: it breaks a rule the API server
    did not check when it was written (an older CRD, a write that bypassed validation)."""

    def __init__(self, body: dict[str, Any], error: ValidationError) -> None:
        self.kind = str(body.get("kind", ""))
        self.name = str(body.get("metadata", {}).get("name", ""))
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        super().__init__(problems)


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], body: dict[str, Any]) -> M:
    """``body`` as the API type ``model``; :class:`InvalidObjectError` when it breaks its rules."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise InvalidObjectError(body, error) from error


def refused(kind: str, body: dict[str, Any], reason: str, message: str, now: datetime) -> Plan:
    """An object that breaks the API rules (InvalidSpec), or whose runtime is not
    available (ArgoNotInstalled): its main condition says so (with a Warning) and
    nothing starts. The rest of its status is kept as it is."""
    ref = ObjectRef.from_body(body)
    status = dict(body.get("status") or {})
    conditions = [Condition.model_validate(c) for c in status.get("conditions") or []]
    plan = Plan()
    transition(
        conditions,
        MAIN_CONDITION.get(kind, "Ready"),
        False,
        reason,
        short(message),
        now=now,
        generation=ref.generation,
        events=plan.events,
        warning=True,
    )
    status.update(observedGeneration=ref.generation, conditions=[c.to_wire() for c in conditions])
    if status != body.get("status"):
        plan.status = status
    return plan
