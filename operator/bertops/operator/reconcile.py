"""Reconcilers: for one object, gather what the planner needs (the fresh object, its
step's observation, related objects, artifacts), call the pure planner, and apply the
plan (stop/start steps, create children, patch status, post Events).

Level-based and idempotent: kopf calls these on create/update/resume and on a timer, and
a restarted operator simply reconciles again. Called by :mod:`bertops.operator.handlers`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from bertops.api import dataset as dataset_api
from bertops.api import model as model_api
from bertops.api import training as training_api
from bertops.api.meta import utcnow
from bertops.operator.artifacts import read_model_artifact
from bertops.operator.config import OperatorConfig
from bertops.operator.kube import Kube
from bertops.operator.metrics import OperatorMetrics
from bertops.operator.planners import dataset as dataset_planner
from bertops.operator.planners import model as model_planner
from bertops.operator.planners import training as training_planner
from bertops.operator.planners.common import ObjectRef, Plan
from bertops.operator.runtime.base import Runtime, StepObservation, StepPhase

log = logging.getLogger(__name__)


class InvalidObjectError(Exception):
    """The stored object does not parse as its API type (should not pass the schema)."""


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        runtime: Runtime,
        config: OperatorConfig,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.kube = kube
        self.runtime = runtime
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self._locks: dict[str, threading.Lock] = {}
        self._running: dict[tuple[str, str], str] = {}  # (namespace, step) -> step kind
        self._guard = threading.Lock()

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def reconcile(self, kind: str, namespace: str, name: str) -> Plan | None:
        """Reconcile one object; returns the applied plan (None when it is gone)."""
        started = time.monotonic()
        outcome = "error"
        try:
            # One reconcile per object at a time: timers and event handlers may overlap.
            with self._lock(f"{kind}/{namespace}/{name}"):
                body = self.kube.get(kind, namespace, name)
                if body is None or body["metadata"].get("deletionTimestamp"):
                    outcome = "gone"
                    return None
                plan = getattr(self, f"_plan_{kind.lower()}")(body)
                self._apply(kind, body, plan)
                outcome = "changed" if not plan.empty else "unchanged"
                return plan
        finally:
            if self.metrics:
                self.metrics.observe_reconcile(kind, outcome, time.monotonic() - started)

    # -- per kind: gather observations and plan ------------------------------------------------

    def _parse(self, model: Any, body: dict[str, Any]) -> Any:
        try:
            return model.model_validate(body)
        except ValidationError as error:
            raise InvalidObjectError(str(error)) from error

    def _observe(self, namespace: str, step: str | None, kind: str) -> StepObservation:
        if not step:
            return StepObservation(StepPhase.ABSENT)
        observed = self.runtime.observe(namespace, step)
        self._track(namespace, step, kind, observed.phase == StepPhase.RUNNING)
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
        step = dataset_planner.step_name(ref.name, "prep", ref.generation)
        return dataset_planner.plan(
            ref,
            obj,
            self._observe(ref.namespace, step, "prepare"),
            config=self.config,
            now=self.clock(),
        )

    def _plan_berttraining(self, body: dict[str, Any]) -> Plan:
        ref = ObjectRef.from_body(body)
        obj = self._parse(training_api.BertTraining, body)
        dataset_body = self.kube.get("BertDataset", ref.namespace, obj.spec.dataset_ref.name)
        dataset = self._parse(dataset_api.BertDataset, dataset_body) if dataset_body else None
        step = training_planner.step_name(ref.name, "train", ref.generation)
        model_exists = (
            self.kube.get("BertModel", ref.namespace, training_planner.model_name(ref, obj.spec))
            is not None
        )
        return training_planner.plan(
            ref,
            obj,
            dataset,
            self._observe(ref.namespace, step, "train"),
            model_exists=model_exists,
            config=self.config,
            now=self.clock(),
        )

    def _plan_bertmodel(self, body: dict[str, Any]) -> Plan:
        ref = ObjectRef.from_body(body)
        obj: model_api.BertModel = self._parse(model_api.BertModel, body)
        spec = obj.spec
        world: dict[str, Any] = {}
        if spec.training_ref is not None:
            training_body = self.kube.get("BertTraining", ref.namespace, spec.training_ref.name)
            if training_body:
                training = self._parse(training_api.BertTraining, training_body)
                world["training"] = training
                if training.status.artifact_uri:
                    world["artifact"] = read_model_artifact(training.status.artifact_uri)
        else:
            code = "cmp" if spec.compression is not None else "eval"
            step = model_planner.step_name(ref.name, code, ref.generation)
            observed = self._observe(
                ref.namespace, step, "compress" if spec.compression is not None else "evaluate"
            )
            world["step"] = observed
            if spec.compression is not None:
                parent_body = self.kube.get(
                    "BertModel", ref.namespace, spec.compression.parent_ref.name
                )
                parent = self._parse(model_api.BertModel, parent_body) if parent_body else None
                world["parent"] = parent
                dataset_name = (
                    spec.compression.dataset_ref.name
                    if spec.compression.dataset_ref
                    else (
                        parent.status.lineage.dataset if parent and parent.status.lineage else None
                    )
                )
            else:
                dataset_name = (
                    spec.evaluation_dataset_ref.name if spec.evaluation_dataset_ref else None
                )
            world.update(self._dataset_uri(ref.namespace, dataset_name))
            uri = None
            if observed.phase == StepPhase.SUCCEEDED and observed.result is not None:
                uri = observed.result.artifacts.get("model") or spec.artifact_uri
            elif spec.artifact_uri and spec.evaluation_dataset_ref is None:
                uri = spec.artifact_uri
            if uri:
                world["artifact"] = read_model_artifact(uri)
        return model_planner.plan(
            ref, obj, model_planner.ModelWorld(**world), config=self.config, now=self.clock()
        )

    def _dataset_uri(self, namespace: str, name: str | None) -> dict[str, Any]:
        if not name:
            return {
                "dataset_problem": "no dataset known: set compression.datasetRef "
                "(or evaluationDatasetRef)"
            }
        body = self.kube.get("BertDataset", namespace, name)
        if body is None:
            return {"dataset_problem": f"BertDataset {name!r} not found"}
        status = body.get("status") or {}
        if not status.get("artifactUri"):
            return {"dataset_problem": f"BertDataset {name!r} is not prepared yet"}
        return {"dataset_uri": status["artifactUri"]}

    # -- apply ----------------------------------------------------------------------------------

    def _apply(self, kind: str, body: dict[str, Any], plan: Plan) -> None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        for step in plan.stop:
            if self.runtime.stop(namespace, step):
                self.kube.event(body, "Normal", "StepStopped", f"stopped superseded step {step}")
        if plan.start is not None:
            self.runtime.start(plan.start)
            self._track(namespace, plan.start.name, plan.start.kind, running=True)
            if self.metrics:
                self.metrics.steps_started.labels(kind=plan.start.kind).inc()
        for child in plan.create:
            self.kube.create(child)
            log.info("created %s %s/%s", child["kind"], namespace, child["metadata"]["name"])
        if plan.status is not None:
            self.kube.patch_status(kind, namespace, name, plan.status)
        for event in plan.events:
            self.kube.event(body, event.type, event.reason, event.message)
            log.info("%s %s/%s: %s: %s", kind, namespace, name, event.reason, event.message)

    def on_delete(self, kind: str, body: dict[str, Any]) -> list[str]:
        """Stop the object's running step; return the steps stopped."""
        meta = body["metadata"]
        step = (body.get("status") or {}).get("step")
        stopped = []
        if step and self.runtime.stop(meta["namespace"], step):
            stopped.append(step)
            log.info(
                "%s %s/%s deleted: stopped step %s", kind, meta["namespace"], meta["name"], step
            )
        return stopped
