"""kopf handlers: thin adapters from kopf's events to the reconcilers.

Datasets, trainings and models are reconciled by the poller
(:mod:`bertops.operator.poller`) alone, fed from kopf's low-level event stream: an event
that creates an object, changes its spec (``metadata.generation`` ahead of
``status.observedGeneration``) or lists it at start-up makes it due at once. So kopf
writes nothing on them (no progress or last-handled-configuration annotations: one API
write less per object and change) and no kopf timer exists (each would add a finalizer
and tick whether or not anything runs). Every event also feeds the reconciler's object
cache (:mod:`bertops.operator.cache`) before the poller is woken. BertDeployments keep
kopf's create/update/resume handlers, and an update handler for the manual rollout
action annotation, besides the poller's looks.

Only the local runtime registers a deletion handler, and with it kopf's finalizer: its
step processes must be stopped and their folders removed. The kubernetes runtime needs
no finalizer (children carry ownerReferences), so deleting an object never waits for
the operator. kopf's own bookkeeping lives in annotations under the ``bertops.io``
prefix, and kopf's per-handler Events are off: the reconcilers post Events for
meaningful transitions instead. Registered on an explicit registry by
:func:`build_registry` (called by ``bertops operator`` and the tests).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from bertops.api.kinds import GROUP, KINDS, VERSION
from bertops.operator.poller import Poller
from bertops.operator.reconcile import Reconciler
from bertops.operator.refusal import InvalidObjectError
from bertops.operator.runtime.base import StepConflictError

log = logging.getLogger(__name__)
PREFIX = "bertops.io"
RECONCILED = ("BertDataset", "BertTraining", "BertModel", "BertDeployment")
# Kinds that kopf handles itself too (create/update/resume, the manual rollout action).
KOPF_HANDLED = ("BertDeployment",)
# A manual rollout action (bertops.operator.rollout.actions) is an annotation, not spec:
# its change must reconcile at once too.
HANDLER_THREADS = 16
ACTION_FIELD = ("metadata", "annotations", "bertops.io/rollout-action")


class KopfKindsDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled-configuration annotation, written only on the kinds whose
    changes kopf's own handlers react to (BertDeployment). The poller tells a change of
    the other kinds by their generation, so kopf writing it there (it does so after the
    creation of any object with a deletion handler) would cost one API write per object
    and change, for nothing."""

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        if body.get("kind") in KOPF_HANDLED:
            super().store(body=body, patch=patch, essence=essence)


def configure(settings: kopf.OperatorSettings) -> None:
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = KopfKindsDiffBase(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5, 10]
    # Handlers are synchronous and mostly wait (API round trips, a step process starting):
    # more threads than the default min(32, cores + 4) let a burst of new objects start
    # their steps without queueing behind each other.
    settings.execution.max_workers = HANDLER_THREADS


def spec_changed(body: dict[str, Any]) -> bool:
    """Whether the spec changed since the operator last planned it: its generation is
    ahead of the one its status was written for."""
    generation = (body.get("metadata") or {}).get("generation")
    observed = (body.get("status") or {}).get("observedGeneration")
    return generation is not None and generation != observed


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
        reconciler.cache.live = True  # the watch feeds it from now on
        poller.start()

    @kopf.on.cleanup(registry=registry)
    def cleanup(**_: Any) -> None:
        poller.stop()

    for info in KINDS:
        if info.kind not in RECONCILED:
            continue
        resource = (GROUP, VERSION, info.plural)
        kind = info.kind
        by_kopf = kind in KOPF_HANDLED

        def reconcile(name: str, namespace: str, kind: str = kind, **_: Any) -> None:
            reconcile_or_raise(reconciler, kind, namespace, name)

        # A coroutine, so each event is handled on kopf's loop (no thread hop): it only
        # updates the cache and the poller's schedule, both behind short locks.
        async def track(
            event: Any,
            name: str,
            namespace: str,
            kind: str = kind,
            by_kopf: bool = by_kopf,
            **_: Any,
        ) -> None:
            # The raw watch event: type None (initial listing), ADDED, MODIFIED, DELETED.
            deleted = event.get("type") == "DELETED"
            body = event.get("object") or {}
            if deleted:
                reconciler.cache.remove(kind, namespace, name)
            else:  # before the poller wakes anything, so a woken look reads this body
                reconciler.cache.put(dict(body))
            fresh = event.get("type") in (None, "ADDED")
            poller.track(
                kind,
                namespace,
                name,
                deleted=deleted,
                handled=by_kopf and fresh,  # kopf's create/resume handler reconciles it
                changed=not by_kopf and (fresh or spec_changed(body)),
            )
            if deleted:
                reconciler.forget(kind, namespace, name)

        def delete(body: kopf.Body, kind: str = kind, **_: Any) -> None:
            reconciler.on_delete(kind, dict(body))

        kopf.on.event(*resource, registry=registry, id="track")(track)  # type: ignore[arg-type]
        if by_kopf:
            kopf.on.create(*resource, registry=registry, id="reconcile")(reconcile)  # type: ignore[arg-type]
            kopf.on.update(*resource, registry=registry, id="reconcile", field="spec")(reconcile)  # type: ignore[arg-type]
            kopf.on.resume(*resource, registry=registry, id="reconcile")(reconcile)  # type: ignore[arg-type]
            on_action = kopf.on.update(
                *resource, registry=registry, id="action", field=ACTION_FIELD
            )
            on_action(reconcile)  # type: ignore[arg-type]
        if cleanup_on_delete:
            kopf.on.delete(*resource, registry=registry, id="stop-steps")(delete)
    return registry
