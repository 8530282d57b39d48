"""A cache of bertops object bodies, fed by the operator's watch events and by the
responses to its own status writes, so a reconcile reads its object and the objects it
depends on without a GET per look (an informer's store, in controller-runtime's terms).

Filled by :func:`bertops.operator.handlers.build_registry` (kopf's event stream, before
the poller is woken, so a woken object is read as the event showed it) and by
:class:`bertops.operator.reconcile.Reconciler` after each status write; read by the
reconcilers. It answers only while ``live`` (the handlers set it when the operator starts
watching): an operator run without the watch (unit tests that call the reconciler
directly) would otherwise read its own stale writes. An object it does not hold (the
initial listing still streaming) is read from the API server by the caller; a namespace
with no cached models is listed instead, since an empty answer from a cold cache would
deselect every model.

A body is replaced only by one at least as new (``metadata.resourceVersion``, compared
as the etcd revision it is): a watch event delivered after our own write's response must
not bring the older status back. ``metadata.managedFields`` is not kept: no reconciler
reads it, and each status write grows it, in memory and in every copy a look takes.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

Bucket = tuple[str, str]  # kind, namespace


def _revision(body: dict[str, Any]) -> int | None:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None


def _without_managed_fields(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` less ``metadata.managedFields``, the caller's dict left as it is."""
    meta = body.get("metadata")
    if not meta or "managedFields" not in meta:
        return body
    return {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


class ObjectCache:
    def __init__(self) -> None:
        self._items: dict[Bucket, dict[str, dict[str, Any]]] = {}  # -> name -> body
        self._guard = threading.Lock()
        self.live = False  # True once watch events feed it (set by the handlers)

    def put(self, body: dict[str, Any]) -> None:
        """Keep ``body`` unless the cache holds a newer version of that object."""
        meta = body.get("metadata") or {}
        bucket = (str(body.get("kind")), str(meta.get("namespace")))
        name = str(meta.get("name"))
        with self._guard:
            found = self._items.setdefault(bucket, {})
            held = found.get(name)
            new, old = _revision(body), _revision(held) if held else None
            if held is None or new is None or old is None or new >= old:
                found[name] = _without_managed_fields(body)

    def remove(self, kind: str, namespace: str, name: str) -> None:
        with self._guard:
            found = self._items.get((kind, namespace))
            if found is not None:
                found.pop(name, None)
                if not found:
                    del self._items[(kind, namespace)]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A private copy of the cached body (None when not held or not live)."""
        if not self.live:
            return None
        with self._guard:
            body = (self._items.get((kind, namespace)) or {}).get(name)
        return copy.deepcopy(body) if body is not None else None

    def list(
        self, kind: str, namespace: str, fallback: Callable[[str], list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """The namespace's objects of a kind; ``fallback`` (a LIST) when none are cached."""
        with self._guard:
            found = self._items.get((kind, namespace))
            if found:
                return list(found.values())
        return fallback(namespace)

    def __len__(self) -> int:
        with self._guard:
            return sum(len(found) for found in self._items.values())
