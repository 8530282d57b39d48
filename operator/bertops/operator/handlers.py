"""kopf handlers: thin adapters from kopf's events to the reconcilers.

Create/update/resume and the poller (:mod:`bertops.operator.poller`, in place of kopf
timers, which would add a finalizer) all call the same level-based reconcile. Only the
local runtime registers a deletion handler, and with it kopf's finalizer: its step
processes must be stopped and their folders removed. The kubernetes runtime needs no
finalizer (children carry ownerReferences), so deleting an object never waits for the
operator. kopf's own bookkeeping lives in annotations under the ``bertops.io`` prefix,
and kopf's per-handler Events are off: the reconcilers post Events for meaningful
transitions instead. Registered on an explicit registry by :func:`build_registry`
(called by ``bertops operator`` and the tests).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from bertops.api.kinds import GROUP, KINDS, VERSION
from bertops.operator.poller import Poller
from bertops.operator.reconcile import InvalidObjectError, Reconciler
from bertops.operator.runtime.base import StepConflictError

log = logging.getLogger(__name__)
PREFIX = "bertops.io"
RECONCILED = ("BertDataset", "BertTraining", "BertModel", "BertDeployment")
# A manual rollout action (bertops.operator.rollout.actions) is an annotation, not spec:
# its change must reconcile at once too.
HANDLER_THREADS = 16
ACTION_FIELD = ("metadata", "annotations", "bertops.io/rollout-action")


def configure(settings: kopf.OperatorSettings) -> None:
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5, 10]
    # Handlers are synchronous and mostly wait (API round trips, a step process starting):
    # more threads than the default min(32, cores + 4) let a burst of new objects start
    # their steps without queueing behind each other.
    settings.execution.max_workers = HANDLER_THREADS


def reconcile_or_raise(reconciler: Reconciler, kind: str, namespace: str, name: str) -> None:
    """Reconcile, turning failures into kopf's permanent or temporary errors."""
    try:
        reconciler.reconcile(kind, namespace, name)
    except InvalidObjectError as error:
        raise kopf.PermanentError(f"{kind} {namespace}/{name} is invalid: {error}") from error
    except StepConflictError as error:
        raise kopf.TemporaryError(str(error), delay=reconciler.config.poll_seconds) from error
    except ApiException as error:
        if error.status in (409, 429) or (error.status or 0) >= 500:
            raise kopf.TemporaryError(f"API {error.status}: {error.reason}", delay=2) from error
        raise kopf.PermanentError(f"API {error.status}: {error.reason}") from error


def build_registry(reconciler: Reconciler, poll_seconds: float) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    poller = Poller(reconciler.poll, poll_seconds)
    cleanup_on_delete = reconciler.config.runtime == "local"

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings)
        poller.start()

    @kopf.on.cleanup(registry=registry)
    def cleanup(**_: Any) -> None:
        poller.stop()

    for info in KINDS:
        if info.kind not in RECONCILED:
            continue
        resource = (GROUP, VERSION, info.plural)
        kind = info.kind

        def reconcile(name: str, namespace: str, kind: str = kind, **_: Any) -> None:
            reconcile_or_raise(reconciler, kind, namespace, name)

        def track(event: Any, name: str, namespace: str, kind: str = kind, **_: Any) -> None:
            # The raw watch event: type None (initial listing), ADDED, MODIFIED, DELETED.
            deleted = event.get("type") == "DELETED"
            if kind == "BertModel":  # before the poller wakes the deployments it concerns
                if deleted:
                    reconciler.models.remove(namespace, name)
                else:
                    reconciler.models.put(dict(event.get("object") or {}))
            # ADDED and the initial listing (type None) reach kopf's create/resume handler.
            handled = event.get("type") in (None, "ADDED")
            poller.track(kind, namespace, name, deleted=deleted, handled=handled)
            if deleted:
                reconciler.forget(kind, namespace, name)

        def delete(body: kopf.Body, kind: str = kind, **_: Any) -> None:
            reconciler.on_delete(kind, dict(body))

        kopf.on.create(*resource, registry=registry, id="reconcile")(reconcile)  # type: ignore[arg-type]
        kopf.on.update(*resource, registry=registry, id="reconcile", field="spec")(reconcile)  # type: ignore[arg-type]
        kopf.on.resume(*resource, registry=registry, id="reconcile")(reconcile)  # type: ignore[arg-type]
        kopf.on.event(*resource, registry=registry, id="track")(track)  # type: ignore[arg-type]
        if kind == "BertDeployment":
            on_action = kopf.on.update(
                *resource, registry=registry, id="action", field=ACTION_FIELD
            )
            on_action(reconcile)  # type: ignore[arg-type]
        if cleanup_on_delete:
            kopf.on.delete(*resource, registry=registry, id="stop-steps")(delete)
    return registry
