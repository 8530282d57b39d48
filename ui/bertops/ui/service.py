"""The management service's operations as plain functions of a :class:`Catalog`: each
returns the JSON-ready data one API endpoint answers and one page renders.

Called (in a worker thread, the Kubernetes client blocks) by :mod:`bertops.ui.api` for
JSON and by :mod:`bertops.ui.pages` for HTML, so the two never disagree; transport
(HTTP status, headers, markup) stays in those modules. :class:`Settings` is what
``bertops ui`` was started with; :class:`DriftLog` remembers the drift scores this
process has seen, for the score-over-time plot.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bertops.ui import artifacts, views
from bertops.ui.catalog import Catalog, CatalogError, check_name


@dataclass(frozen=True)
class Settings:
    """How ``bertops ui`` serves: who may call it and whether anything may change."""

    namespace: str
    token: str | None = None  # the configured bearer token (None with pass_through)
    pass_through: bool = False  # the caller's token goes to the Kubernetes API instead
    allow_writes: bool = False  # read-only unless started with --allow-writes
    secure_cookie: bool = False  # set the Secure flag (behind TLS)


@dataclass
class DriftLog:
    """(check time, score) per deployment, as this process saw them in status.drift.

    The operator keeps only the latest check in status (a status is not a time series);
    every read of a deployment adds its latest check here, so the page can plot the
    score over the time the UI has been watching. Bounded per deployment."""

    size: int = 500
    _points: dict[str, deque[tuple[str, float]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, name: str, drift: dict[str, Any]) -> list[dict[str, Any]]:
        at, score = drift.get("lastCheck"), drift.get("score")
        with self._lock:
            points = self._points.setdefault(name, deque(maxlen=self.size))
            fresh = not points or points[-1][0] != at
            if isinstance(at, str) and isinstance(score, int | float) and fresh:
                points.append((at, float(score)))
            return [{"at": when, "score": value} for when, value in points]


def models(catalog: Catalog) -> dict[str, Any]:
    served = views.served_map(catalog.objects("BertDeployment"))
    rows = [
        views.model_row(body, served.get(views.name_of(body), []))
        for body in catalog.objects("BertModel")
    ]
    return {"namespace": catalog.namespace, "items": rows}


def model(catalog: Catalog, name: str) -> dict[str, Any]:
    body = catalog.get("BertModel", name)
    detail = views.model_detail(body, catalog.served_by(name))
    detail["plots"] = artifacts.plots_data(body)
    return detail


def compare(catalog: Catalog, a: str, b: str) -> dict[str, Any]:
    return views.compare(catalog.get("BertModel", a), catalog.get("BertModel", b))


def delete_model(catalog: Catalog, name: str, force: bool) -> dict[str, Any]:
    served = catalog.delete_model(name, force=force)
    return {"deleted": name, "servedBy": served, "forced": bool(served)}


def datasets(catalog: Catalog) -> dict[str, Any]:
    rows = [views.dataset_row(body) for body in catalog.objects("BertDataset")]
    return {"namespace": catalog.namespace, "items": rows}


def dataset(catalog: Catalog, name: str) -> dict[str, Any]:
    return views.dataset_row(catalog.get("BertDataset", name))


def trainings(catalog: Catalog) -> dict[str, Any]:
    rows = [views.training_row(body) for body in catalog.objects("BertTraining")]
    return {"namespace": catalog.namespace, "items": rows}


def training(catalog: Catalog, name: str) -> dict[str, Any]:
    return views.training_row(catalog.get("BertTraining", name))


def deployments(catalog: Catalog, drift_log: DriftLog) -> dict[str, Any]:
    rows = []
    for body in catalog.objects("BertDeployment"):
        view = views.deployment_view(body)
        view["driftHistory"] = drift_log.observe(view["name"], view["drift"])
        rows.append(view)
    return {"namespace": catalog.namespace, "items": rows}


def deployment(catalog: Catalog, name: str, drift_log: DriftLog) -> dict[str, Any]:
    view = views.deployment_view(catalog.get("BertDeployment", name))
    view["driftHistory"] = drift_log.observe(name, view["drift"])
    return view


def rollout_action(catalog: Catalog, name: str, action: str) -> dict[str, Any]:
    value = catalog.rollout_action(check_name(name), action)
    return {"deployment": name, "action": action, "annotation": value}


__all__ = ["CatalogError", "DriftLog", "Settings"]
