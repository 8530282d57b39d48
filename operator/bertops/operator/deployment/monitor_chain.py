"""The retraining side of drift monitoring: start a retraining when a drifted check is
allowed one (creating the BertDataset revision and BertTraining that
:mod:`.retrain` builds), first waiting for new feedback labels when the policy asks for
them (``status.retrains.waiting``, decided by
:func:`bertops.operator.rollout.retrain.decide_wait`), follow each started one along
drift -> dataset -> training -> model -> rollout in ``status.retrains.history``, and find
the objects both need (the stable model's dataset and training).

Called by :class:`bertops.operator.deployment.monitor.DriftMonitor`: :meth:`follow` and
:meth:`wait` at every reconcile, :meth:`maybe_start` after a drifted check. Reads
BertModels, BertTrainings and BertDatasets; writes nothing but the children it creates
through the reconciler's plan (never a user's spec).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from bertops.api import dataset as dataset_api
from bertops.api import deployment as api
from bertops.api import training as training_api
from bertops.api.meta import find_condition, set_condition
from bertops.operator.config import OperatorConfig
from bertops.operator.deployment import retrain as builders
from bertops.operator.deployment.monitor_steps import MonitorPlan
from bertops.operator.deployment.target import feedback_uri
from bertops.operator.kube import Kube
from bertops.operator.metrics import OperatorMetrics
from bertops.operator.objects import Event, ObjectRef
from bertops.operator.planners.common import short
from bertops.operator.rollout.retrain import (
    ENDED,
    ChainView,
    begin_wait,
    decide_wait,
    follow_chain,
    may_retrain,
)
from bertops.operator.runtime.base import REASON_RESULT_UNREADABLE

log = logging.getLogger(__name__)
HISTORY = 20
WAIT_NOTE = "; retraining waits for feedback"  # how the drift message's note begins
GOOD_OUTCOMES = {"Trained", "Promoted"}
# Final failure reasons of the objects a retraining creates (the planners' final sets).
TRAINING_FAILED = {
    training_api.REASON_STEP_FAILED,
    training_api.REASON_INVALID_SPEC,
    training_api.REASON_UNSUPPORTED_TASK,
    training_api.REASON_NAME_CONFLICT,
    REASON_RESULT_UNREADABLE,
}
DATASET_FAILED = {
    dataset_api.REASON_INVALID_DATA,
    dataset_api.REASON_STEP_FAILED,
    dataset_api.REASON_INVALID_SPEC,
    REASON_RESULT_UNREADABLE,
}


class RetrainChain:
    def __init__(self, kube: Kube, config: OperatorConfig, metrics: OperatorMetrics | None) -> None:
        self.kube = kube
        self.config = config
        self.metrics = metrics

    # -- lookups -------------------------------------------------------------------------------

    def _source_training(
        self, namespace: str, spec: api.BertDeploymentSpec, stable: dict[str, Any] | None
    ) -> tuple[training_api.BertTraining | None, str]:
        """``retrain.trainingRef``, else the BertTraining that registered the stable model
        (or, for a compressed model, its parent)."""
        if spec.retrain.training_ref is not None:
            name: str | None = spec.retrain.training_ref.name
        else:
            name = _training_ref(stable)
            parent = ((stable or {}).get("spec") or {}).get("compression", {}).get("parentRef")
            if name is None and parent:
                name = _training_ref(self.kube.get("BertModel", namespace, parent["name"]))
        if not name:
            return (
                None,
                "the stable model was not registered by a BertTraining: set retrain.trainingRef",
            )
        body = self.kube.get("BertTraining", namespace, name)
        if body is None:
            return None, f"BertTraining {name} not found"
        return training_api.BertTraining.model_validate(body), ""

    # -- starting ------------------------------------------------------------------------------

    def maybe_start(
        self,
        ref: ObjectRef,
        spec: api.BertDeploymentSpec,
        status: api.BertDeploymentStatus,
        now: datetime,
        out: MonitorPlan,
        *,
        announce_skip: bool,
        feedback_labels: float | None = None,
    ) -> None:
        """After a drifted check: when the guards allow a retraining, start it, or first
        wait for new feedback labels (``feedback_labels``: the gateway's count so far).
        A skip is announced once per drift episode (when Drifted just turned True), not
        per check."""
        if status.retrains is not None and status.retrains.waiting is not None:
            return  # this drift already waits: wait() carries it on
        verdict = may_retrain(spec, status, now)
        if not verdict.allowed:
            if announce_skip and spec.retrain.enabled:
                out.events.append(Event("Normal", verdict.reason, verdict.message))
            return
        wait = begin_wait(spec, feedback_labels, now)
        if wait is None:
            self._start(ref, spec, status, now, out, verdict.message, announce=announce_skip)
            return
        try:
            # What the retraining needs is checked now: a missing training is reported
            # when the drift is found, not once the wait is over.
            self._build(ref, spec, status, now)
        except (LookupError, ValueError) as error:
            self._unbuildable(status, error, out, announce=announce_skip)
            return
        retrains = status.retrains = (status.retrains or api.RetrainStatus()).model_copy()
        retrains.waiting = wait
        out.events.append(
            Event(
                "Normal",
                api.REASON_RETRAIN_WAITING,
                f"{verdict.message}: {wait.message} (retrain.minFeedbackRows), then it starts "
                "with what exists",
            )
        )

    def wait(
        self,
        ref: ObjectRef,
        spec: api.BertDeploymentSpec,
        status: api.BertDeploymentStatus,
        feedback_labels: float | None,
        now: datetime,
        out: MonitorPlan,
    ) -> None:
        """Carry a waiting retraining on: count the new labels, note the wait in the
        drift message and the Drifted condition, and start (or drop) it when
        :func:`decide_wait` says so."""
        if status.retrains is None or status.retrains.waiting is None:
            return
        step = decide_wait(spec, status.retrains.waiting, feedback_labels, now)
        retrains = status.retrains = status.retrains.model_copy()
        if step.action == "wait":
            retrains.waiting = step.wait
            _note(ref, status, step.wait.message, now)
            return
        retrains.waiting = None
        _note(ref, status, None, now)
        if step.action == "cancel":
            out.events.append(Event("Normal", api.REASON_RETRAIN_SKIPPED, step.message))
            return
        drift = status.drift or api.DriftStatus()
        score = f"drift score {drift.score:.2f}" if drift.score is not None else "drift"
        self._start(
            ref, spec, status, now, out, f"{score}, {step.message}", step.message, announce=True
        )

    def _start(
        self,
        ref: ObjectRef,
        spec: api.BertDeploymentSpec,
        status: api.BertDeploymentStatus,
        now: datetime,
        out: MonitorPlan,
        why: str,
        record_message: str | None = None,
        *,
        announce: bool,
    ) -> None:
        """Create the retraining's objects and record it; ``why`` opens the Event."""
        try:
            created = self._build(ref, spec, status, now)
        except (LookupError, ValueError) as error:
            self._unbuildable(status, error, out, announce=announce)
            return
        out.create += created
        name = created[-1]["metadata"]["name"]
        drift = status.drift or api.DriftStatus()
        record = api.RetrainRecord(
            at=now,
            drift_score=drift.score,
            report_uri=drift.report_uri,
            dataset=created[0]["metadata"]["name"],
            training=name,
            model=name,
            message=record_message,
        )
        retrains = status.retrains = (status.retrains or api.RetrainStatus()).model_copy()
        retrains.count += 1
        retrains.last_at, retrains.last_training, retrains.active = now, name, name
        retrains.history = [*(retrains.history or []), record][-HISTORY:]
        out.events.append(
            Event(
                "Normal",
                api.REASON_RETRAIN_STARTED,
                f"{why}: created BertDataset {record.dataset} and BertTraining "
                f"{name} (report {drift.report_uri})",
            )
        )
        if self.metrics is not None:
            self.metrics.retrains.labels(ref.namespace, ref.name).inc()

    @staticmethod
    def _unbuildable(
        status: api.BertDeploymentStatus, error: Exception, out: MonitorPlan, *, announce: bool
    ) -> None:
        # In the drift message at every check; as an Event once per drift episode.
        if status.drift is not None:
            status.drift.message = f"{status.drift.message}; {error}"
        if announce:
            out.events.append(Event("Warning", api.REASON_RETRAIN_FAILED, str(error)))

    def _build(
        self,
        ref: ObjectRef,
        spec: api.BertDeploymentSpec,
        status: api.BertDeploymentStatus,
        now: datetime,
    ) -> list[dict[str, Any]]:
        stable = self.kube.get("BertModel", ref.namespace, status.stable_model or "")
        source, problem = self._source_training(ref.namespace, spec, stable)
        if source is None:
            raise LookupError(f"cannot retrain: {problem}")
        dataset_body = self.kube.get("BertDataset", ref.namespace, source.spec.dataset_ref.name)
        if dataset_body is None:
            raise LookupError(
                f"cannot retrain: BertDataset {source.spec.dataset_ref.name} not found"
            )
        original = dataset_api.BertDataset.model_validate(dataset_body)
        assert spec.model.selector is not None  # may_retrain and decide_wait refuse model.ref
        name = builders.retrain_name(
            ref.name, (status.retrains.count if status.retrains else 0) + 1
        )
        drift = status.drift or api.DriftStatus()
        why = builders.cause(ref, drift.score, drift.report_uri, now)
        feedback = (
            feedback_uri(self.config, ref.namespace, ref.name)
            if spec.retrain.include_feedback
            else None
        )
        return [
            builders.dataset_manifest(
                name, ref, original.spec, feedback, why, spec.retrain.holdout_fraction
            ),
            builders.training_manifest(
                name,
                ref,
                source.spec,
                spec.model.selector.family,
                why,
                now,
                share_with_family=spec.retrain.share_with_family,
            ),
        ]

    # -- following -----------------------------------------------------------------------------

    def follow(
        self,
        ref: ObjectRef,
        status: api.BertDeploymentStatus,
        models: dict[str, dict[str, Any]],
        events: list[Event],
    ) -> None:
        """Move the active retraining's record along its chain; ends it when the chain
        ended (one GET of the training per reconcile, only while one is active)."""
        retrains = status.retrains
        if retrains is None or not retrains.active or not retrains.history:
            return
        index = next(
            (i for i, r in enumerate(retrains.history) if r.training == retrains.active), None
        )
        if index is None:
            retrains.active = None
            return
        record = retrains.history[index]
        view = self._view(ref.namespace, record, models)
        outcome, message = follow_chain(record, view, status)
        if (outcome, message) == (record.outcome, record.message):
            return
        retrains = status.retrains = retrains.model_copy()
        history = list(retrains.history or [])
        history[index] = record.model_copy(update={"outcome": outcome, "message": message})
        retrains.history = history
        if outcome in ENDED:
            retrains.active = None
        if outcome != record.outcome:
            text = f"retraining {record.training}: {outcome}" + (f" ({message})" if message else "")
            if outcome in GOOD_OUTCOMES:
                events.append(Event("Normal", f"Retrain{outcome}", text))
            else:
                events.append(Event("Warning", f"Retrain{outcome}", text))

    def _view(
        self, namespace: str, record: api.RetrainRecord, models: dict[str, dict[str, Any]]
    ) -> ChainView:
        """Where the record's objects stand: a dataset that failed to prepare fails the
        chain too (its training would wait for it for ever)."""
        training = self.kube.get("BertTraining", namespace, record.training)
        if training is None:
            return ChainView(None)
        succeeded = _condition(training, training_api.SUCCEEDED)
        if succeeded.get("status") == "True":
            outcome = "Succeeded"
        elif succeeded.get("status") == "False" and succeeded.get("reason") in TRAINING_FAILED:
            outcome = "Failed"
        else:
            outcome = "Running"  # Unknown, or False while waiting or retrying: not final
        message = str(succeeded.get("message") or "")
        if outcome == "Running":
            dataset = self.kube.get("BertDataset", namespace, record.dataset)
            ready = _condition(dataset or {}, dataset_api.READY)
            if dataset is None or ready.get("reason") in DATASET_FAILED:
                why = ready.get("message") or "it is gone"
                return ChainView("Failed", f"BertDataset {record.dataset}: {why}")
        model = models.get(record.model or "") or {}
        return ChainView(outcome, message, _condition(model, "Ready").get("status") == "True")


def _note(
    ref: ObjectRef, status: api.BertDeploymentStatus, note: str | None, now: datetime
) -> None:
    """Put the wait's note (None: remove it) at the end of the drift message and of the
    Drifted condition's message, after what the last check said."""
    drift = status.drift
    if drift is not None and drift.message is not None:
        base = drift.message.split(WAIT_NOTE)[0]
        drift.message = f"{base}; {note}" if note else base
    found = find_condition(status.conditions, api.DRIFTED)
    if found is not None:
        base = found.message.split(WAIT_NOTE)[0]
        message = short(f"{base}; {note}") if note else base
        # Same status and reason: a message-only update, so no Event and no transition.
        set_condition(
            status.conditions,
            api.DRIFTED,
            found.status,
            found.reason,
            message,
            now=now,
            generation=ref.generation,
        )


def trained_on(
    kube: Kube, namespace: str, model: dict[str, Any]
) -> tuple[str | None, dict[str, Any] | None]:
    """The name and body of the BertDataset a model was trained on (its lineage, else
    the dataset it was evaluated or compressed with); (None, None) when it names none."""
    lineage = (model.get("status") or {}).get("lineage") or {}
    spec = model.get("spec") or {}
    name = (
        lineage.get("dataset")
        or (spec.get("evaluationDatasetRef") or {}).get("name")
        or ((spec.get("compression") or {}).get("datasetRef") or {}).get("name")
    )
    return (str(name), kube.get("BertDataset", namespace, name)) if name else (None, None)


def dataset_of(
    kube: Kube, namespace: str, model: dict[str, Any], needed_for: str
) -> tuple[str | None, str]:
    """The artifact URI of the prepared dataset a model was trained on, or a sentence
    saying why there is none (``needed_for`` ends it)."""
    name, body = trained_on(kube, namespace, model)
    if name is None:
        return None, (
            f"BertModel {model['metadata']['name']} names no dataset (no lineage, no "
            f"evaluationDatasetRef): {needed_for}"
        )
    uri = ((body or {}).get("status") or {}).get("artifactUri")
    if not uri:
        return None, f"BertDataset {name} is missing or not prepared"
    return str(uri), ""


def _training_ref(model: dict[str, Any] | None) -> str | None:
    ref = ((model or {}).get("spec") or {}).get("trainingRef") or {}
    return str(ref["name"]) if ref.get("name") else None


def _condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return dict(condition)
    return {}
