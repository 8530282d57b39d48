"""A cache of BertModel bodies per namespace, fed by the operator's watch events, so a
BertDeployment's look (its model selection) lists no models from the API server.

Filled by :func:`bertops.operator.handlers.build_registry` (kopf's event stream, before
the poller is woken, so a woken deployment sees the model that woke it) and read by
:class:`bertops.operator.deployment.reconciler.DeploymentReconciler`. A namespace the
cache knows nothing about yet (the initial listing still streaming, or an operator run
without handlers, as in unit tests) is answered by one LIST instead: an empty answer
from a cold cache would deselect every model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class ModelCache:
    def __init__(self) -> None:
        self._items: dict[str, dict[str, dict[str, Any]]] = {}  # namespace -> name -> body
        self._guard = threading.Lock()

    def put(self, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        with self._guard:
            self._items.setdefault(str(meta.get("namespace")), {})[str(meta.get("name"))] = body

    def remove(self, namespace: str, name: str) -> None:
        with self._guard:
            found = self._items.get(namespace)
            if found is not None:
                found.pop(name, None)
                if not found:
                    del self._items[namespace]

    def list(
        self, namespace: str, fallback: Callable[[str], list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """The namespace's models from the cache; ``fallback`` (a LIST) when it has none."""
        with self._guard:
            found = self._items.get(namespace)
            if found:
                return list(found.values())
        return fallback(namespace)
