"""Shared building blocks of the bertops API: the camelCase base model, conditions and
their pure helpers, object references and resource requests.

Used by every kind module in :mod:`bertops.api` and by the operator's reconcilers, which
call :func:`set_condition` to compute status without I/O (the clock is an argument and
the helper says whether anything changed, so a reconcile can skip no-op patches).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator
from pydantic.alias_generators import to_camel

# The API group and version of the four kinds (re-exported by bertops.api.kinds).
GROUP = "bertops.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""RFC 1123 label (at most 63 characters, no dots): what our references accept as a name,
stricter than the DNS subdomain most Kubernetes kinds allow as an object name."""

DnsName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]


@dataclass(frozen=True)
class Rule:
    """One validation rule written once: the CEL expression the API server evaluates
    (``x-kubernetes-validations``) and the same rule in Python, which pydantic runs on
    every parse, so a step spec or an object that never met the API server obeys it too.

    ``check`` is None only for transition rules (``oldSelf``), which need the previous
    object and so only the API server can judge.
    """

    cel: str
    message: str
    check: Callable[[Any], bool] | None = None


# Every Rule handed to cel(), by CEL expression: ApiModel's validator finds the Python
# check of each CEL rule in a model's schema extra here, so the two cannot drift apart.
_RULES: dict[str, Rule] = {}


def validations(*rules: Rule | tuple[str, str]) -> dict[str, JsonValue]:
    """CEL ``x-kubernetes-validations`` as a JSON-schema extra: rules the API server
    evaluates, so a cross-field mistake is refused at `kubectl apply` time."""
    found = [rule if isinstance(rule, Rule) else Rule(*rule) for rule in rules]
    for rule in found:
        _RULES.setdefault(rule.cel, rule)
    return {"x-kubernetes-validations": [{"rule": r.cel, "message": r.message} for r in found]}


def cel(*rules: Rule | tuple[str, str]) -> ConfigDict:
    """A model_config carrying CEL rules for the object the model describes; the Python
    checks of the rules run whenever pydantic validates such an object."""
    return ConfigDict(json_schema_extra=validations(*rules))


def exactly_one(obj: Any, *fields: str) -> bool:
    """Python twin of the CEL ``[has(a), has(b)].filter(x, x).size() == 1``."""
    return sum(getattr(obj, name) is not None for name in fields) == 1


class ApiModel(BaseModel):
    """Base of every API type: camelCase on the wire, snake_case in Python, no unknown
    fields (a typo in a manifest is an error, not a silently ignored setting)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )

    @model_validator(mode="after")
    def _check_cel_rules(self) -> ApiModel:
        extra = type(self).model_config.get("json_schema_extra")
        entries = extra.get("x-kubernetes-validations", []) if isinstance(extra, dict) else []
        broken = []
        for entry in entries if isinstance(entries, list) else []:
            rule = _RULES.get(str(entry["rule"])) if isinstance(entry, dict) else None
            if rule is not None and rule.check is not None and not rule.check(self):
                broken.append(rule.message)
        if broken:
            raise ValueError("; ".join(broken))
        return self

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict with camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(ApiModel):
    """Status types tolerate fields written by a newer operator version, and round their
    own float fields to 4 decimal places (floats inside dicts or lists are kept as they
    are): they are read by people (printer columns), not machines."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="after")
    def _round_floats(self) -> StatusModel:
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, float):
                object.__setattr__(self, name, round(value, 4))
        return self


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """One observation about an object, as in metav1.Condition."""

    type: str = Field(description="CamelCase condition type, e.g. Ready or Succeeded.")
    status: ConditionStatus
    reason: str = Field(description="CamelCase machine-readable reason (a named constant).")
    message: str = Field(default="", description="What happened, for a person.")
    last_transition_time: datetime | None = Field(
        default=None, description="When status last changed (not when it was last checked)."
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this condition was computed for."
    )


def find_condition(conditions: list[Condition], type_: str) -> Condition | None:
    """The condition of that type, or None."""
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: list[Condition], type_: str) -> bool:
    found = find_condition(conditions, type_)
    return found is not None and found.status == ConditionStatus.TRUE


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None = None,
) -> bool:
    """Set a condition in place; return whether anything changed.

    lastTransitionTime moves only when the status flips, per the API conventions, so a
    reconcile that re-observes the same state produces no status patch.
    """
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    existing = find_condition(conditions, type_)
    if existing is None:
        conditions.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=generation,
            )
        )
        return True
    changed = False
    if existing.status != status:
        existing.status = status
        existing.last_transition_time = now
        changed = True
    for attr, value in (
        ("reason", reason),
        ("message", message),
        ("observed_generation", generation),
    ):
        if getattr(existing, attr) != value:
            setattr(existing, attr, value)
            changed = True
    return changed


def utcnow() -> datetime:
    """The clock the operator passes in; tests pass a fixed time instead."""
    return datetime.now(UTC).replace(microsecond=0)


class LocalObjectReference(ApiModel):
    """A reference to an object of a known kind in the same namespace."""

    name: DnsName = Field(description="Name of the referenced object (a DNS label).")


class Resources(ApiModel):
    """Compute for one step process or pod (Kubernetes quantities)."""

    cpu: str = Field(default="1", pattern=r"^[0-9]+(\.[0-9]+)?m?$", description="CPU request.")
    memory: str = Field(
        default="2Gi",
        pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$",
        description="Memory request and limit.",
    )
    gpu: int = Field(default=0, ge=0, le=16, description="nvidia.com/gpu per pod.")


class StatusBase(StatusModel):
    """What every kind's status carries, per the Kubernetes API conventions."""

    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the status reflects."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
