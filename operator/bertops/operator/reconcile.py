"""Reconcilers: for one object, gather what the planner needs (the fresh object, its
step's observation, related objects, artifacts), call the pure planner, and apply the
plan (stop/start steps, create children, patch status, post Events). Steps run on the
native runtime, or on the Argo runtime for objects with ``spec.engine: argo``.

Level-based and idempotent: the poller calls these when the watch shows a change and
while a step runs (kopf's handlers too, for BertDeployments), and a restarted operator
simply reconciles again. Objects come from the watch-fed cache, falling back to a GET.
Called by :mod:`bertops.operator.handlers` and the poller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bertops.api import dataset as dataset_api
from bertops.api import model as model_api
from bertops.api import reasons
from bertops.api import training as training_api
from bertops.api.meta import utcnow
from bertops.operator.artifacts import read_model_artifact
from bertops.operator.cache import ObjectCache
from bertops.operator.config import OperatorConfig
from bertops.operator.deployment.reconciler import DeploymentReconciler, make_backend
from bertops.operator.kube import Kube, NameConflictError, owner_uids
from bertops.operator.looks import next_look
from bertops.operator.metrics import OperatorMetrics
from bertops.operator.objects import ArtifactInfo, ObjectRef, Plan
from bertops.operator.planners import dataset as dataset_planner
from bertops.operator.planners import model as model_planner
from bertops.operator.planners import training as training_planner
from bertops.operator.planners.common import current_step
from bertops.operator.refusal import InvalidObjectError, M, parse, refused
from bertops.operator.runtime.base import (
    Runtime,
    RuntimeUnavailableError,
    StepObservation,
    StepPhase,
)
from bertops.operator.uris import uri_problem

log = logging.getLogger(__name__)
SKIP_CLEANUP = "bertops.io/skip-cleanup"
# An object whose runtime is unavailable (Argo's CRDs missing) is checked again this often,
# not at every poll: each check is a failed API discovery, and nothing changes until an
# admin installs Argo. A new generation (engine back to native) is planned at once.
UNAVAILABLE_RECHECK_SECONDS = 30.0


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        runtime: Runtime,
        config: OperatorConfig,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], datetime] = utcnow,
        argo_runtime: Runtime | None = None,
    ) -> None:
        self.kube = kube
        self.runtime = runtime  # the native one: local processes or Jobs
        self.argo_runtime = argo_runtime  # for objects with spec.engine 'argo'
        self._unavailable: dict[str, tuple[int, float]] = {}  # key -> (generation, recheck)
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self._locks: dict[str, threading.Lock] = {}
        self._running: dict[tuple[str, str], str] = {}  # (namespace, step) -> step kind
        self._guard = threading.Lock()
        # Bodies from the watch (and our own status writes): read before any GET.
        self.cache = ObjectCache()
        self.deployments = DeploymentReconciler(
            kube,
            config,
            make_backend(config, kube),
            self._parse,
            self.clock,
            metrics,
            runtime,
            cache=self.cache,
        )
        # One planner per kind (the kinds of bertops.api.kinds).
        self._planners: dict[str, Callable[[dict[str, Any]], Plan]] = {
            "BertDataset": self._plan_bertdataset,
            "BertTraining": self._plan_berttraining,
            "BertModel": self._plan_bertmodel,
            "BertDeployment": self._plan_bertdeployment,
        }

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def runtime_for(self, body: dict[str, Any]) -> Runtime:
        """The runtime that runs this object's steps: Argo for ``spec.engine: argo``."""
        if (body.get("spec") or {}).get("engine") != "argo":
            return self.runtime
        if self.argo_runtime is None:
            raise RuntimeUnavailableError("spec.engine 'argo': this operator runs no Argo runtime")
        return self.argo_runtime

    def reconcile(self, kind: str, namespace: str, name: str) -> Plan | None:
        """Reconcile one object; returns the applied plan (None when it is gone)."""
        return self._reconcile(kind, namespace, name)[0]

    def poll(self, kind: str, namespace: str, name: str) -> float | None:
        """Reconcile for the poller: the seconds until the object needs another look, or
        None when only a change (a watch event) can move it."""
        return self._reconcile(kind, namespace, name)[1]

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """A deleted object's bookkeeping goes, so per-object state stays bounded."""
        key = f"{kind}/{namespace}/{name}"
        with self._guard:
            self._locks.pop(key, None)
            self._unavailable.pop(key, None)

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """An object as the watch last showed it (or our own last write returned), else
        from the API server; None when it does not exist."""
        body = self.cache.get(kind, namespace, name)
        if body is None:
            body = self.kube.get(kind, namespace, name)
            if body is not None and self.cache.live:
                self.cache.put(body)
        return body

    def _reconcile(self, kind: str, namespace: str, name: str) -> tuple[Plan | None, float | None]:
        started = time.monotonic()
        outcome = "error"
        key = f"{kind}/{namespace}/{name}"
        try:
            # One reconcile per object at a time: timers and event handlers may overlap.
            with self._lock(key):
                body = self.read(kind, namespace, name)
                if body is None or body["metadata"].get("deletionTimestamp"):
                    outcome = "gone"
                    return None, None
                generation = int(body["metadata"].get("generation") or 0)
                held = self._unavailable.get(key)
                if held and held[0] == generation and time.monotonic() < held[1]:
                    outcome = "unchanged"
                    return Plan(), held[1] - time.monotonic()
                delay: float | None
                try:
                    plan = self._planners[kind](body)
                    self._apply(kind, body, plan)
                    self._unavailable.pop(key, None)
                    delay = next_look(
                        kind, body, plan, self.config.poll_seconds, self.deployments.next_look
                    )
                except InvalidObjectError as error:
                    if (error.kind, error.name) != (kind, name):
                        raise  # a related object is invalid: its own reconcile says so
                    plan = refused(
                        kind,
                        body,
                        reasons.REASON_INVALID_SPEC,
                        f"the spec breaks the API rules: {error}",
                        self.clock(),
                    )
                    self._apply(kind, body, plan)
                    delay = None  # nothing moves until the spec changes
                except RuntimeUnavailableError as error:
                    # Reported in the condition, not raised: kopf would retry it in a loop.
                    log.warning("%s: %s", key, error)
                    plan = refused(kind, body, error.reason, str(error), self.clock())
                    self._apply(kind, body, plan)
                    recheck = time.monotonic() + UNAVAILABLE_RECHECK_SECONDS
                    self._unavailable[key] = (generation, recheck)
                    delay = UNAVAILABLE_RECHECK_SECONDS
                outcome = "changed" if not plan.empty else "unchanged"
                return plan, delay
        finally:
            if self.metrics:
                self.metrics.observe_reconcile(kind, outcome, time.monotonic() - started)

    # -- per kind: gather observations and plan ------------------------------------------------

    def _parse(self, model: type[M], body: dict[str, Any]) -> M:
        return parse(model, body)

    def _read_artifact(self, uri: str, namespace: str) -> ArtifactInfo | None:
        """Read and verify a model artifact, unless the URI allowlist refuses it for the
        object's namespace (the operator never reads what a step could not)."""
        problem = uri_problem(uri, self.config, namespace)
        if problem:
            return ArtifactInfo(uri, problems=[f"the artifact URI {problem}"])
        return read_model_artifact(uri)

    def _observe(
        self, ref: ObjectRef, step: str, kind: str, runtime: Runtime | None = None
    ) -> StepObservation:
        observed = (runtime or self.runtime).observe(ref.namespace, step, ref.uid)
        self._track(ref.namespace, step, kind, observed.phase == StepPhase.RUNNING)
        return observed

    def _track(self, namespace: str, step: str, kind: str, running: bool) -> None:
        if running:
            self._running[(namespace, step)] = kind
        else:
            self._running.pop((namespace, step), None)
        if self.metrics:
            for step_kind in ("prepare", "train", "evaluate", "compress"):
                count = sum(1 for k in self._running.values() if k == step_kind)
                self.metrics.steps_running.labels(kind=step_kind).set(count)

    def _plan_bertdataset(self, body: dict[str, Any]) -> Plan:
        ref = ObjectRef.from_body(body)
        obj = self._parse(dataset_api.BertDataset, body)
        step = current_step(ref, "prep", obj.status)
        return dataset_planner.plan(
            ref,
            obj,
            self._observe(ref, step, "prepare"),
            config=self.config,
            now=self.clock(),
        )

    def _plan_berttraining(self, body: dict[str, Any]) -> Plan:
        ref = ObjectRef.from_body(body)
        obj = self._parse(training_api.BertTraining, body)
        dataset_body = self.read("BertDataset", ref.namespace, obj.spec.dataset_ref.name)
        dataset = self._parse(dataset_api.BertDataset, dataset_body) if dataset_body else None
        step = current_step(ref, "train", obj.status)
        model = self.read("BertModel", ref.namespace, training_planner.model_name(ref, obj.spec))
        return training_planner.plan(
            ref,
            obj,
            dataset,
            self._observe(ref, step, "train", self.runtime_for(body)),
            model_exists=model is not None,
            model_foreign=model is not None and ref.uid not in owner_uids(model),
            config=self.config,
            now=self.clock(),
        )

    def _plan_bertmodel(self, body: dict[str, Any]) -> Plan:
        ref = ObjectRef.from_body(body)
        obj: model_api.BertModel = self._parse(model_api.BertModel, body)
        if obj.spec.training_ref is not None:
            world = self._trained_world(ref, obj.spec.training_ref.name)
        else:
            world = self._step_world(ref, obj)
        return model_planner.plan(ref, obj, world, config=self.config, now=self.clock())

    def _trained_world(self, ref: ObjectRef, training_name: str) -> model_planner.ModelWorld:
        """A model of a training: the training and the artifact it published."""
        training_body = self.read("BertTraining", ref.namespace, training_name)
        if not training_body:
            return model_planner.ModelWorld()
        training = self._parse(training_api.BertTraining, training_body)
        uri = training.status.artifact_uri
        artifact = self._read_artifact(uri, ref.namespace) if uri else None
        return model_planner.ModelWorld(training=training, artifact=artifact)

    def _step_world(self, ref: ObjectRef, obj: model_api.BertModel) -> model_planner.ModelWorld:
        """A model made or scored by a step of its own (compression, evaluation): the
        step's observation, the parent, the dataset and the artifact to verify."""
        spec = obj.spec
        code = "cmp" if spec.compression is not None else "eval"
        observed = self._observe(
            ref,
            current_step(ref, code, obj.status),
            "compress" if spec.compression is not None else "evaluate",
        )
        parent = None
        if spec.compression is not None:
            parent_body = self.read("BertModel", ref.namespace, spec.compression.parent_ref.name)
            parent = self._parse(model_api.BertModel, parent_body) if parent_body else None
            dataset_name = (
                spec.compression.dataset_ref.name
                if spec.compression.dataset_ref
                else (parent.status.lineage.dataset if parent and parent.status.lineage else None)
            )
        else:
            dataset_name = spec.evaluation_dataset_ref.name if spec.evaluation_dataset_ref else None
        dataset_uri, dataset_problem = self._dataset_uri(ref.namespace, dataset_name)
        uri = None
        if observed.phase == StepPhase.SUCCEEDED and observed.result is not None:
            uri = observed.result.artifacts.get("model") or spec.artifact_uri
        elif spec.artifact_uri and spec.evaluation_dataset_ref is None:
            uri = spec.artifact_uri
        return model_planner.ModelWorld(
            parent=parent,
            dataset_uri=dataset_uri,
            dataset_problem=dataset_problem,
            artifact=self._read_artifact(uri, ref.namespace) if uri else None,
            step=observed,
        )

    def _plan_bertdeployment(self, body: dict[str, Any]) -> Plan:
        return self.deployments.plan(body)  # selects, decides and moves serving itself

    def _dataset_uri(self, namespace: str, name: str | None) -> tuple[str | None, str | None]:
        """The prepared dataset's artifact URI, or why there is none."""
        if not name:
            return None, "no dataset known: set compression.datasetRef (or evaluationDatasetRef)"
        body = self.read("BertDataset", namespace, name)
        if body is None:
            return None, f"BertDataset {name!r} not found"
        status = body.get("status") or {}
        if not status.get("artifactUri"):
            return None, f"BertDataset {name!r} is not prepared yet"
        return str(status["artifactUri"]), None

    # -- apply ----------------------------------------------------------------------------------

    def _apply(self, kind: str, body: dict[str, Any], plan: Plan) -> None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        for step in plan.stop:
            if self.runtime_for(body).stop(namespace, step):
                self.kube.event(body, "Normal", "StepStopped", f"stopped superseded step {step}")
        if plan.start is not None:
            self.runtime_for(body).start(plan.start)
            self._track(namespace, plan.start.name, plan.start.kind, running=True)
            if self.metrics:
                self.metrics.steps_started.labels(kind=plan.start.kind).inc()
        for child in plan.create:
            try:
                self.kube.create(child)
            except NameConflictError as error:
                # Never adopted. The status this plan computed assumed the child, so it is
                # not written; the next reconcile sees the stranger and says NameConflict.
                self.kube.event(body, "Warning", training_api.REASON_NAME_CONFLICT, str(error))
                log.warning("%s %s/%s: %s", kind, namespace, name, error)
                return
            log.info("created %s %s/%s", child["kind"], namespace, child["metadata"]["name"])
        if plan.status is not None:
            written = self.kube.patch_status(kind, namespace, name, plan.status)
            if self.cache.live:
                self.cache.put(written)  # the next look must not see the older status
        for event in plan.events:
            self.kube.event(body, event.type, event.reason, event.message)
            log.info("%s %s/%s: %s: %s", kind, namespace, name, event.reason, event.message)

    def on_delete(self, kind: str, body: dict[str, Any]) -> list[str]:
        """Stop and remove the deleted object's steps (local runtime, behind the
        finalizer); return the steps removed. Never raises: a cleanup that fails is
        logged and reported as an Event, and the finalizer is released anyway, so a
        deletion is never blocked for ever. The annotation ``bertops.io/skip-cleanup:
        "true"`` skips the cleanup altogether."""
        meta = body["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta.get("uid", "")
        if (meta.get("annotations") or {}).get(SKIP_CLEANUP) == "true":
            log.warning(
                "%s %s/%s deleted with %s: steps left as they are",
                kind,
                namespace,
                name,
                SKIP_CLEANUP,
            )
            return []
        # The object's lock: a reconcile that read it just before the deletion finishes
        # (and starts its step) first, so the cleanup below sees that step too.
        with self._lock(f"{kind}/{namespace}/{name}"):
            try:
                removed = self.runtime_for(body).cleanup(namespace, uid)
                if kind == "BertDeployment":
                    self.deployments.forget(namespace, name)
                    removed += self.deployments.backend.cleanup(namespace, name, uid)
            except Exception as error:  # whatever went wrong, deletion must go on
                log.exception("cleanup of %s %s/%s failed", kind, namespace, name)
                self.kube.event(
                    body,
                    "Warning",
                    "CleanupFailed",
                    f"could not stop or remove the steps of this {kind} ({error}); the "
                    "deletion goes on: check for step processes left behind",
                )
                return []
        for step in removed:
            self._track(namespace, step, "", running=False)
        if removed:
            log.info(
                "%s %s/%s deleted: removed steps %s", kind, namespace, name, ", ".join(removed)
            )
        return removed
