"""Drift monitoring of a BertDeployment: the reference sample of its stable model, drift
checks on the configured interval, ``status.drift`` with the ``Drifted`` condition, and,
with a retrain policy, the retraining a drifted check starts.

Called by :class:`bertops.operator.deployment.reconciler.DeploymentReconciler` at every
reconcile, after the rollout decided the status. Checks never run on the operator's (or
a server's) event loop: each is a step, ``bertops trainer reference|drift`` (a local
process or a Job, through the operator's native runtime), started here and read back on
a later reconcile. At most one monitor step runs per deployment; its name comes from
``status.drift.serial``, so a restarted operator adopts instead of duplicating it.

The order for the stable model S: a reference step when S has none (its dataset's
validation split, written beside the model in the store); then a drift step every
``drift.intervalSeconds`` over the newest ``windowSize`` rows S served. A failed step
sets ``Drifted=Unknown`` with its reason and waits a whole interval (no crash loop, no
retraining). A drifted check hands over to :class:`.monitor_chain.RetrainChain`, which
may first wait for new feedback labels (the gateway's count, passed in at every
reconcile); what retraining creates is built by :mod:`.retrain`; its guards, its wait and
its chain are :mod:`bertops.operator.rollout.retrain`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from bertops.api import deployment as api
from bertops.api.meta import ConditionStatus, find_condition
from bertops.api.results import DriftDetails, ReferenceDetails
from bertops.api.steps import DriftStep, ReferenceStep, StepSpec
from bertops.operator.config import OperatorConfig
from bertops.operator.deployment.monitor_chain import RetrainChain, dataset_of
from bertops.operator.deployment.monitor_steps import (
    MonitorPlan,
    min_rows,
    reference_uri,
    remove_superseded,
)
from bertops.operator.deployment.target import predictions_uri
from bertops.operator.kube import Kube
from bertops.operator.metrics import OperatorMetrics
from bertops.operator.objects import ObjectRef
from bertops.operator.planners.common import short, step_name, transition
from bertops.operator.runtime.base import Runtime, StepObservation, StepPhase, StepRequest

log = logging.getLogger(__name__)


class DriftMonitor:
    def __init__(
        self,
        kube: Kube,
        runtime: Runtime,
        config: OperatorConfig,
        clock: Callable[[], datetime],
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.kube = kube
        self.runtime = runtime
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.chain = RetrainChain(kube, config, metrics)

    def plan(
        self,
        ref: ObjectRef,
        spec: api.BertDeploymentSpec,
        status: api.BertDeploymentStatus,
        models: dict[str, dict[str, Any]],
        *,
        feedback_labels: float | None = None,
    ) -> MonitorPlan:
        """Update ``status`` in place (drift, retrains, Drifted) and return what to start,
        create and post. ``feedback_labels``: the feedback labels the deployment's gateway
        accepted so far (cumulative; None when unknown), which a waiting retraining counts."""
        out = MonitorPlan()
        now = self.clock()
        self.chain.follow(ref, status, models, out.events)
        stable = status.stable_model
        if not spec.drift.enabled:
            # A verdict from before drift.enabled turned false must not stay standing.
            if find_condition(status.conditions, api.DRIFTED) is not None:
                self._drifted(
                    ref,
                    status,
                    ConditionStatus.UNKNOWN,
                    api.REASON_DRIFT_DISABLED,
                    "drift.enabled is false: no checks run",
                    now,
                    out,
                )
        elif stable is not None and stable in models:
            drift = status.drift = (status.drift or api.DriftStatus()).model_copy()
            if drift.step:
                self._collect(ref, spec, status, drift, feedback_labels, now, out)
            if drift.step is None:
                self._schedule(ref, spec, status, drift, models[stable], now, out)
            self._export(ref, status)
        # After the checks, so the wait's note follows what the last check said.
        self.chain.wait(ref, spec, status, feedback_labels, now, out)
        return out

    # -- reading a finished step -------------------------------------------------------------

    def _collect(
        self,
        ref: ObjectRef,
        spec: api.BertDeploymentSpec,
        status: api.BertDeploymentStatus,
        drift: api.DriftStatus,
        labels: float | None,
        now: datetime,
        out: MonitorPlan,
    ) -> None:
        assert drift.step is not None
        observed = self.runtime.observe(ref.namespace, drift.step, ref.uid)
        if observed.phase == StepPhase.RUNNING:
            return
        remove_superseded(self.runtime, ref, drift.serial, observed.phase)  # keep only this one
        step, drift.step = drift.step, None
        if observed.phase == StepPhase.ABSENT:
            log.warning("%s/%s: monitor step %s vanished", ref.namespace, ref.name, step)
            return
        details = observed.result.details if observed.result is not None else None
        if observed.phase == StepPhase.SUCCEEDED and isinstance(details, ReferenceDetails):
            drift.reference_uri = details.artifact_uri
            drift.reference_model = drift.model
            drift.reference_rows = details.rows
            drift.message = f"reference of {drift.model}: {details.rows} rows"
            drift.next_check = now + timedelta(seconds=spec.drift.interval_seconds)
            self._drifted(
                ref,
                status,
                ConditionStatus.UNKNOWN,
                api.REASON_NOT_ENOUGH_DATA,
                f"reference ready ({details.rows} rows); first check at "
                f"{drift.next_check:%H:%M:%SZ}",
                now,
                out,
            )
        elif observed.phase == StepPhase.SUCCEEDED and isinstance(details, DriftDetails):
            self._judged(ref, spec, status, drift, details, labels, now, out)
        else:
            self._failed(ref, spec, status, drift, step, observed, now, out)

    def _judged(
        self,
        ref: ObjectRef,
        spec: api.BertDeploymentSpec,
        status: api.BertDeploymentStatus,
        drift: api.DriftStatus,
        details: DriftDetails,
        labels: float | None,
        now: datetime,
        out: MonitorPlan,
    ) -> None:
        drift.last_check = now
        drift.window_rows = details.window_rows
        drift.report_uri = details.report_uri or drift.report_uri
        if not details.enough_data or details.score is None:
            drift.score = drift.drifted = None
            drift.signals = None
            status.drift_display = "-"
            message = (
                f"not enough data: {details.window_rows or 0} rows served by {drift.model} "
                f"so far, a score needs {min_rows(spec)}"
            )
            self._drifted(
                ref, status, ConditionStatus.UNKNOWN, api.REASON_NOT_ENOUGH_DATA, message, now, out
            )
            return
        drift.score, drift.drifted = details.score, bool(details.drifted)
        drift.signals = {s.name: bool(s.drifted) for s in details.signals or []}
        status.drift_display = f"{details.score:.2f}"
        moved = sorted(name for name, flag in drift.signals.items() if flag)
        message = (
            f"score {details.score:.2f} (threshold {spec.drift.threshold}) over "
            f"{details.window_rows} rows of {drift.model}; drifted: {', '.join(moved) or 'none'}"
        )
        drift.message = short(message, 400)
        if drift.drifted:
            flipped = self._drifted(
                ref, status, True, api.REASON_DRIFT_DETECTED, message, now, out, warning=True
            )
            self.chain.maybe_start(
                ref, spec, status, now, out, announce_skip=flipped, feedback_labels=labels
            )
        else:
            self._drifted(ref, status, False, api.REASON_NO_DRIFT, message, now, out)

    def _failed(
        self,
        ref: ObjectRef,
        spec: api.BertDeploymentSpec,
        status: api.BertDeploymentStatus,
        drift: api.DriftStatus,
        step: str,
        observed: StepObservation,
        now: datetime,
        out: MonitorPlan,
    ) -> None:
        """A failed reference or check: its reason and message in Drifted=Unknown, and
        the next try one interval later (never a tight loop, never a retraining)."""
        result = observed.result
        # Without a result, the step's own name tells its kind (a deployment named
        # "x-ref-y" must not make a failed drift check look like a reference).
        was_reference = step == step_name(ref.name, "ref", drift.serial or 0, ref.uid)
        kind = result.kind if result is not None else ("reference" if was_reference else "drift")
        why = (result.message if result is not None else "") or observed.message or "no result"
        reason = (
            api.REASON_REFERENCE_FAILED if kind == "reference" else api.REASON_DRIFT_CHECK_FAILED
        )
        code = f" ({result.reason})" if result is not None and result.reason else ""
        drift.next_check = now + timedelta(seconds=spec.drift.interval_seconds)
        drift.message = short(f"{kind} step {step} failed{code}: {why}", 400)
        self._drifted(
            ref,
            status,
            ConditionStatus.UNKNOWN,
            reason,
            f"{drift.message}; next try at {drift.next_check:%H:%M:%SZ}",
            now,
            out,
            warning=True,
        )

    # -- starting the next step --------------------------------------------------------------

    def _schedule(
        self,
        ref: ObjectRef,
        spec: api.BertDeploymentSpec,
        status: api.BertDeploymentStatus,
        drift: api.DriftStatus,
        model: dict[str, Any],
        now: datetime,
        out: MonitorPlan,
    ) -> None:
        stable = model["metadata"]["name"]
        wanted = reference_uri(self.config, ref.namespace, model)
        waiting = drift.next_check is not None and now < drift.next_check
        if drift.reference_model != stable or drift.reference_uri != wanted:
            condition = find_condition(status.conditions, api.DRIFTED)
            failed_before = (
                condition is not None
                and condition.reason == api.REASON_REFERENCE_FAILED
                and drift.model == stable
            )
            if failed_before and waiting:
                return
            self._start_reference(ref, spec, status, drift, model, wanted, now, out)
            return
        if waiting:
            return
        serial = (drift.serial or 0) + 1
        name = step_name(ref.name, "drift", serial, ref.uid)
        check = DriftStep(
            name=name,
            reference_uri=wanted,
            predictions_uri=predictions_uri(self.config, ref.namespace, ref.name),
            model_name=stable,
            window_size=spec.drift.window_size,
            min_rows=min_rows(spec),
            threshold=spec.drift.threshold,
            method=spec.drift.method,
            output_uri=self.config.artifact_uri(
                ref.namespace, "deployments", ref.name, "drift", f"check-{serial}"
            ),
        )
        self._start(ref, spec, drift, serial, check, out)
        drift.next_check = now + timedelta(seconds=spec.drift.interval_seconds)

    def _start_reference(
        self,
        ref: ObjectRef,
        spec: api.BertDeploymentSpec,
        status: api.BertDeploymentStatus,
        drift: api.DriftStatus,
        model: dict[str, Any],
        wanted: str,
        now: datetime,
        out: MonitorPlan,
    ) -> None:
        stable = model["metadata"]["name"]
        drift.model = stable
        drift.reference_model = drift.reference_uri = drift.reference_rows = None
        drift.score = drift.drifted = drift.signals = None
        status.drift_display = "-"
        dataset_uri, problem = dataset_of(
            self.kube, ref.namespace, model, "drift monitoring needs its validation split"
        )
        if dataset_uri is None:
            drift.next_check = now + timedelta(seconds=spec.drift.interval_seconds)
            self._drifted(
                ref,
                status,
                ConditionStatus.UNKNOWN,
                api.REASON_REFERENCE_FAILED,
                f"no reference for {stable}: {problem}",
                now,
                out,
                warning=True,
            )
            return
        serial = (drift.serial or 0) + 1
        name = step_name(ref.name, "ref", serial, ref.uid)
        step = ReferenceStep(
            name=name,
            model_uri=str((model.get("status") or {}).get("artifactUri")),
            dataset_uri=dataset_uri,
            size=spec.drift.reference_size,
            output_uri=wanted,
            model_name=stable,
        )
        self._start(ref, spec, drift, serial, step, out)
        self._drifted(
            ref,
            status,
            ConditionStatus.UNKNOWN,
            api.REASON_NO_REFERENCE,
            f"computing the reference sample of {stable} ({name})",
            now,
            out,
        )

    def _start(
        self,
        ref: ObjectRef,
        spec: api.BertDeploymentSpec,
        drift: api.DriftStatus,
        serial: int,
        step: StepSpec,
        out: MonitorPlan,
    ) -> None:
        drift.serial, drift.step = serial, step.name
        # The check runs the model over a window of inputs, as a server replica does, so it
        # asks for what the user gave a replica (and fits where the servers fit).
        out.start = StepRequest(
            name=step.name,
            namespace=ref.namespace,
            spec=step,
            cpu=spec.serving.resources.cpu,
            memory=spec.serving.resources.memory,
            owner=ref.owner_reference(),
        )

    # -- status and metrics ------------------------------------------------------------------

    def _drifted(
        self,
        ref: ObjectRef,
        status: api.BertDeploymentStatus,
        value: bool | ConditionStatus,
        reason: str,
        message: str,
        now: datetime,
        out: MonitorPlan,
        *,
        warning: bool = False,
    ) -> bool:
        """Set Drifted; True when its status or reason flipped (an Event was queued)."""
        before = len(out.events)
        transition(
            status.conditions,
            api.DRIFTED,
            value,
            reason,
            short(message),
            now=now,
            generation=ref.generation,
            events=out.events,
            warning=warning,
        )
        return len(out.events) > before

    def _export(self, ref: ObjectRef, status: api.BertDeploymentStatus) -> None:
        if self.metrics is not None and status.drift is not None:
            drift = status.drift
            self.metrics.export_drift(ref.namespace, ref.name, drift.score, drift.drifted)

    def wait_seconds(self, status: api.BertDeploymentStatus, poll: float) -> float | None:
        """When monitoring needs the next look: every poll while a step or a retraining
        runs or waits for feedback, at the next check otherwise; None when nothing is
        scheduled."""
        drift, retrains = status.drift, status.retrains
        if (drift is not None and drift.step) or (
            retrains is not None and (retrains.active or retrains.waiting is not None)
        ):
            return poll
        if drift is not None and drift.next_check is not None:
            return max(0.0, (drift.next_check - self.clock()).total_seconds())
        return None

    def forget(self, namespace: str, name: str) -> None:
        """A deleted deployment's gauges go too."""
        if self.metrics is not None:
            self.metrics.forget_drift(namespace, name)
