r"""The values every layer of the operator passes around, in one neutral home: which
object (:class:`ObjectRef`), what a reconcile should do (:class:`Plan`, with its
:class:`Event`\ s) and what the reconciler found at an artifact URI
(:class:`ArtifactInfo`). No I/O and no dependency on any layer above the API types, so
planners, runtimes, serving backends and the reconciler can all import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bertops.api.artifacts import ModelManifest
from bertops.api.kinds import API_VERSION
from bertops.operator.runtime.base import StepRequest


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
    api_version: str = API_VERSION

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ObjectRef:
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            namespace=meta.get("namespace", "default"),
            generation=int(meta.get("generation", 1)),
            uid=meta.get("uid", ""),
            kind=body["kind"],
            api_version=body.get("apiVersion", API_VERSION),
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


@dataclass(frozen=True)
class ArtifactInfo:
    """What the reconciler found at an artifact URI (read and verified outside)."""

    uri: str
    manifest: ModelManifest | None = None
    manifest_sha256: str | None = None
    problems: list[str] = field(default_factory=list)
