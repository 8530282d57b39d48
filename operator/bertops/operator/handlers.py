"""kopf handlers: thin adapters from kopf's events and timers to the reconcilers.

Create/update/resume and a timer all call the same level-based reconcile; deletion
(behind a finalizer) stops the object's running step. kopf's own bookkeeping lives in
annotations under the ``bertops.io`` prefix, and kopf's per-handler Events are off: the
reconcilers post Events for meaningful transitions instead. Registered on an explicit
registry by :func:`build_registry` (called by ``bertops operator`` and the tests).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from bertops.api.kinds import GROUP, KINDS, VERSION
from bertops.operator.reconcile import InvalidObjectError, Reconciler

log = logging.getLogger(__name__)
PREFIX = "bertops.io"
# Kinds the operator reconciles today; BertDeployment comes with the serving issues.
RECONCILED = ("BertDataset", "BertTraining", "BertModel")


def configure(settings: kopf.OperatorSettings) -> None:
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5, 10]


def build_registry(reconciler: Reconciler, poll_seconds: float) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings)

    for info in KINDS:
        if info.kind not in RECONCILED:
            continue
        resource = (GROUP, VERSION, info.plural)
        kind = info.kind

        def reconcile(name: str, namespace: str, kind: str = kind, **_: Any) -> None:
            try:
                reconciler.reconcile(kind, namespace, name)
            except InvalidObjectError as error:
                raise kopf.PermanentError(
                    f"{kind} {namespace}/{name} is invalid: {error}"
                ) from error
            except ApiException as error:
                if error.status in (409, 429) or (error.status or 0) >= 500:
                    raise kopf.TemporaryError(
                        f"API {error.status}: {error.reason}", delay=2
                    ) from error
                raise kopf.PermanentError(f"API {error.status}: {error.reason}") from error

        def delete(body: kopf.Body, kind: str = kind, **_: Any) -> None:
            reconciler.on_delete(kind, dict(body))

        kopf.on.create(*resource, registry=registry, id="reconcile")(reconcile)  # type: ignore[arg-type]
        kopf.on.update(*resource, registry=registry, id="reconcile", field="spec")(reconcile)  # type: ignore[arg-type]
        kopf.on.resume(*resource, registry=registry, id="reconcile")(reconcile)  # type: ignore[arg-type]
        kopf.timer(
            *resource,
            registry=registry,
            id="poll",
            interval=poll_seconds,
            initial_delay=poll_seconds,
        )(reconcile)  # type: ignore[arg-type]
        kopf.on.delete(*resource, registry=registry, id="stop-steps")(delete)
    return registry
