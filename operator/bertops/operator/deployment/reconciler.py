"""The BertDeployment reconciler: select a model, judge the canary, decide, serve.

For one BertDeployment: list the namespace's BertModels and select one
(:mod:`bertops.operator.rollout.selection`; models retrained for another deployment are
skipped), read the manual action from the annotation
(:mod:`~bertops.operator.rollout.actions`), read the gateway's metrics (its ``/metrics``,
or a Prometheus server when the operator is given one) and whether its routes carry the
canary yet, call the pure :func:`bertops.operator.rollout.state.decide`, then let the
serving backend (:mod:`.local` or :mod:`.cluster`) move towards the decided
stable/canary/weight (and the routes' stickiness and pairing). A new model's offline
evaluation runs as a step (:mod:`.challenge`). The
status (with ``endpoint``) and the Events go back as a :class:`Plan` that
:class:`bertops.operator.reconcile.Reconciler` applies like any other kind's.

The poller calls this when :meth:`DeploymentReconciler.next_look` says (the rollout's
requeue delay, a drift step running or due, at least every ``MAX_LOOK_SECONDS``) and on
watch events (the deployment's own, and its namespace's BertModels'); the analysis
itself runs only when ``decide`` asked to look again or when an input changed (spec
generation, the action annotation, the selected model), so status is not rewritten at
every look. Serving is moved forward at every call (a server becoming ready, a retired
one to stop). Drift monitoring and retraining (:mod:`.monitor`, given the gateway's
feedback label count while a retraining waits for labels) run on top of the rollout's
status. The spec is never written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from bertops.api import deployment as api
from bertops.api.meta import find_condition, set_condition
from bertops.operator.cache import ObjectCache
from bertops.operator.config import OperatorConfig
from bertops.operator.deployment.challenge import OfflineChallenge
from bertops.operator.deployment.monitor import DriftMonitor
from bertops.operator.deployment.monitor_steps import MonitorPlan
from bertops.operator.deployment.server_manifests import gateway_name
from bertops.operator.deployment.target import Served, ServingBackend, Target, version_of
from bertops.operator.kube import Kube
from bertops.operator.metrics import OperatorMetrics
from bertops.operator.objects import ObjectRef, Plan
from bertops.operator.rollout import actions, selection
from bertops.operator.rollout.conditions import VERDICT_RESULTS
from bertops.operator.rollout.metrics import (
    MetricsSource,
    Observations,
    PerModel,
    ScrapeSource,
    observations_for,
)
from bertops.operator.rollout.prometheus import PrometheusSource
from bertops.operator.rollout.state import Decision, decide
from bertops.operator.runtime.base import Runtime

log = logging.getLogger(__name__)
SETTLING_SECONDS = 1.0  # look again this soon while serving still moves
MAX_LOOK_SECONDS = 30.0  # a settled deployment is still looked at this often
OUTCOMES = {
    api.REASON_PROMOTED: "Promoted",
    api.REASON_ABORTED: "Aborted",
    api.REASON_SUPERSEDED: "Aborted",
}


def carries(served: Served, status: api.BertDeploymentStatus) -> bool:
    """Whether the gateway's applied routes carry status's canary at its weight, or as
    the shadow in the shadow phase (a step's pause counts from then)."""
    routes = served.routes
    if status.canary_model is None or routes is None:
        return routes is not None or status.canary_model is None
    if status.shadowing:
        return routes.shadow is not None and routes.shadow.name == status.canary_model
    return (
        routes.canary is not None
        and routes.canary.name == status.canary_model
        and round(routes.canary_weight) == (status.canary_weight or 0)
    )


def make_backend(config: OperatorConfig, kube: Kube) -> ServingBackend:
    """The serving backend for the operator's runtime (imported lazily)."""
    if config.runtime == "local":
        from bertops.operator.deployment.local import LocalServing

        return LocalServing(config, kube)
    from bertops.operator.deployment.kubernetes import KubernetesServing

    return KubernetesServing(kube, config)


class DeploymentReconciler:
    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        backend: ServingBackend,
        parse: Callable[[type[api.BertDeployment], dict[str, Any]], api.BertDeployment],
        clock: Callable[[], datetime],
        metrics: OperatorMetrics | None = None,
        runtime: Runtime | None = None,
        cache: ObjectCache | None = None,
    ) -> None:
        self.kube = kube
        self.config = config
        self.backend = backend
        self.parse = parse  # the Reconciler's: raises InvalidObjectError
        self.clock = clock
        self.metrics = metrics
        # (namespace, name) -> (inputs last decided on, monotonic time to decide again).
        self._due: dict[tuple[str, str], tuple[tuple[Any, ...], float]] = {}
        self._monitor_due: dict[tuple[str, str], float] = {}  # monotonic time
        self.cache = cache or ObjectCache()  # fed by the handlers' watch events
        self._guard = threading.Lock()
        # Drift checks run as steps on the native runtime; without one (unit tests of the
        # rollout alone) there is no monitoring.
        self.monitor = DriftMonitor(kube, runtime, config, clock, metrics) if runtime else None
        self.challenge = OfflineChallenge(kube, runtime, config) if runtime else None

    def plan(self, body: dict[str, Any]) -> Plan:
        ref = ObjectRef.from_body(body)
        obj: api.BertDeployment = self.parse(api.BertDeployment, body)
        bodies = self.cache.list("BertModel", ref.namespace, self._list_models)
        chosen = selection.select(obj.spec.model, bodies, deployment=ref.name)
        if chosen.name is None:
            # The watch-fed cache may lag behind a model that just turned Ready: "nothing
            # to serve" is written only once the API server itself says so.
            bodies = self._list_models(ref.namespace)
            chosen = selection.select(obj.spec.model, bodies, deployment=ref.name)
        action = actions.from_metadata(body["metadata"])
        inputs = (ref.uid, ref.generation, action.raw if action else None, chosen.name)
        key = (ref.namespace, ref.name)
        with self._guard:
            last = self._due.get(key)
        versions = {v.name: v for b in bodies if (v := version_of(b)) is not None}
        models = {str(b["metadata"]["name"]): b for b in bodies}
        if last is not None and last[0] == inputs and time.monotonic() < last[1]:
            # Nothing to decide yet; keep serving moving towards the current status.
            served = self._serve(ref, obj.spec, obj.status, versions)
            if not served.settled:
                self._remember(key, inputs, min(last[1] - time.monotonic(), SETTLING_SECONDS))
            return self._monitored(ref, obj, obj.status.model_copy(deep=True), models, Plan(), body)
        current = self.backend.observe(ref)
        observations = self._observe(ref, obj.status, current) if obj.status.canary_model else None
        decision = decide(
            obj.spec,
            obj.status,
            chosen.name,
            observations,
            action,
            self.clock(),
            generation=ref.generation,
            selection_message=chosen.message,
            routed=carries(current, obj.status),
        )
        served = self._serve(ref, obj.spec, decision.status, versions)
        status = decision.status.model_copy(
            update={
                "endpoint": served.endpoint or obj.status.endpoint,
                "metrics_endpoint": served.metrics_endpoint or obj.status.metrics_endpoint,
                "observed_generation": ref.generation,
            }
        )
        if status.stable_model and served.routes is None:
            self._starting(status, obj.status, served, ref.generation)
        delay = decision.requeue_seconds or self.config.poll_seconds * 10
        self._remember(key, inputs, delay if served.settled else SETTLING_SECONDS)
        self._count(ref, decision, status)
        for problem in served.problems:
            log.warning("%s/%s: %s", ref.namespace, ref.name, problem)
        return self._monitored(ref, obj, status, models, Plan(events=list(decision.events)), body)

    def _monitored(
        self,
        ref: ObjectRef,
        obj: api.BertDeployment,
        status: api.BertDeploymentStatus,
        models: dict[str, dict[str, Any]],
        plan: Plan,
        body: dict[str, Any],
    ) -> Plan:
        """Drift monitoring and retraining on top of the rollout's status (in place),
        then the status patch when anything differs from what is stored."""
        # The offline evaluation is read first (the retrain chain then sees where it
        # stands) and started last (one step per reconcile: a drift check goes first).
        if self.challenge is not None:
            self.challenge.collect(ref, obj.spec, status)
        if self.monitor is None:
            monitored = MonitorPlan()
        else:
            labels = self._feedback_labels(ref, obj.spec, status)
            monitored = self.monitor.plan(ref, obj.spec, status, models, feedback_labels=labels)
            wait = self.monitor.wait_seconds(status, self.config.poll_seconds)
            with self._guard:
                if wait is None:
                    self._monitor_due.pop((ref.namespace, ref.name), None)
                else:
                    self._monitor_due[(ref.namespace, ref.name)] = time.monotonic() + wait
        plan.start = monitored.start
        if self.challenge is not None and plan.start is None:
            plan.start = self.challenge.start(ref, obj.spec, status, models)
        plan.create += monitored.create
        plan.events += monitored.events
        wire = status.to_wire()
        if wire != (body.get("status") or {}):
            plan.status = wire
        return plan

    def _starting(
        self,
        status: api.BertDeploymentStatus,
        previous: api.BertDeploymentStatus,
        served: Served,
        generation: int,
    ) -> None:
        """Decided, but nothing answers yet: Ready only once the gateway serves. The
        previous Ready condition is the base, so lastTransitionTime does not move while
        the servers keep starting."""
        before = find_condition(previous.conditions, api.READY)
        status.conditions = [c for c in status.conditions if c.type != api.READY]
        if before is not None:
            status.conditions.append(before.model_copy())
        set_condition(
            status.conditions,
            api.READY,
            False,
            api.REASON_SERVERS_STARTING,
            "; ".join(served.problems) or f"starting the servers of {status.stable_model}",
            now=self.clock(),
            generation=generation,
        )

    def _remember(self, key: tuple[str, str], inputs: tuple[Any, ...], delay: float) -> None:
        with self._guard:
            self._due[key] = (inputs, time.monotonic() + max(0.0, delay))

    def _list_models(self, namespace: str) -> list[dict[str, Any]]:
        return self.kube.list_objects("BertModel", namespace)

    def next_look(self, namespace: str, name: str) -> float:
        """Seconds until this deployment needs another look: when its rollout decides
        again or its drift monitoring has something due, and at least every
        ``MAX_LOOK_SECONDS`` (each look also restarts a server process that died)."""
        now = time.monotonic()
        with self._guard:
            times = [
                due[1]
                for due in (
                    self._due.get((namespace, name)),
                    (None, self._monitor_due[(namespace, name)])
                    if (namespace, name) in self._monitor_due
                    else None,
                )
                if due is not None
            ]
        return max(0.0, min([now + MAX_LOOK_SECONDS, *times]) - now)

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._due.pop((namespace, name), None)
            self._monitor_due.pop((namespace, name), None)
        if self.monitor is not None:
            self.monitor.forget(namespace, name)

    def _serve(
        self,
        ref: ObjectRef,
        spec: api.BertDeploymentSpec,
        status: api.BertDeploymentStatus,
        versions: dict[str, Any],
    ) -> Served:
        """Hand the status's stable/canary/weight to the backend. A model that vanished
        (or lost its artifact) cannot be started: what serves stays as it is."""
        stable = versions.get(status.stable_model or "")
        canary = versions.get(status.canary_model or "") if status.canary_model else None
        if stable is None or (status.canary_model and canary is None):
            return self.backend.observe(ref)
        target = Target(
            stable,
            canary,
            status.canary_weight or 0 if canary else 0,
            sticky=spec.rollout.sticky,
            compare=spec.rollout.analysis.paired,
            shadow=bool(status.shadowing),
        )
        return self.backend.ensure(ref, spec, target)

    def _source(self, ref: ObjectRef, served: Served) -> MetricsSource | None:
        if self.config.prometheus_url:
            matchers = {"namespace": ref.namespace, "service": gateway_name(ref.name)}
            return PrometheusSource(self.config.prometheus_url, matchers)
        return ScrapeSource(served.metrics_urls) if served.metrics_urls else None

    def _read(self, ref: ObjectRef, served: Served) -> PerModel | None:
        source = self._source(ref, served)
        if source is None:
            return None
        try:
            return source.read()
        except (httpx.HTTPError, ValueError) as error:
            log.warning("metrics of %s/%s unreadable: %s", ref.namespace, ref.name, error)
            return None

    def _observe(
        self, ref: ObjectRef, status: api.BertDeploymentStatus, served: Served
    ) -> Observations | None:
        """The two sides of the analysis; None when the metrics cannot be read (the state
        machine then holds the step: it never advances blind)."""
        per_model = self._read(ref, served)
        if per_model is None:
            return None
        if status.shadowing:
            return observations_for(per_model, status.stable_model, None, status.canary_model)
        return observations_for(per_model, status.stable_model, status.canary_model)

    def _feedback_labels(
        self, ref: ObjectRef, spec: api.BertDeploymentSpec, status: api.BertDeploymentStatus
    ) -> float | None:
        """Feedback labels the gateway accepted so far (all variants), read only while a
        drift check runs or a retraining waits for labels; None when unknown."""
        drift, retrains = status.drift, status.retrains
        busy = (drift is not None and drift.step) or (retrains is not None and retrains.waiting)
        if not (spec.retrain.enabled and spec.retrain.include_feedback and busy):
            return None
        per_model = self._read(ref, self.backend.observe(ref))
        if per_model is None:
            return None
        return sum(o.feedback_total for (variant, _), o in per_model.items() if variant != "shadow")

    def _count(self, ref: ObjectRef, decision: Decision, status: api.BertDeploymentStatus) -> None:
        if self.metrics is None:
            return
        self.metrics.canary_weight.labels(ref.namespace, ref.name).set(
            (status.canary_weight or 0) if status.canary_model else 0
        )
        for gate in decision.gates:
            self.metrics.analysis_results.labels(gate.name, VERDICT_RESULTS[gate.verdict]).inc()
        for event in decision.events:
            outcome = OUTCOMES.get(event.reason)
            if outcome is None and event.type == "Warning" and event.reason.endswith("GateFailed"):
                outcome = "RolledBack"
            if outcome is not None:
                self.metrics.rollout_outcomes.labels(outcome, event.reason).inc()
