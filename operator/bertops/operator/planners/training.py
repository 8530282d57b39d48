"""Planner for BertTraining: wait for the dataset, run one ``train`` step per generation
(N ranks when replicas > 1), mirror its progress into status, and on success register
an owned BertModel carrying the metrics and lineage."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bertops.api import dataset as dataset_api
from bertops.api import training as api
from bertops.api.meta import ConditionStatus, find_condition, is_true
from bertops.api.steps import ExitCode, TrainStep
from bertops.operator.config import OperatorConfig
from bertops.operator.planners.common import (
    ObjectRef,
    Plan,
    settled,
    short,
    step_name,
    transition,
)
from bertops.operator.runtime.base import StepObservation, StepPhase, StepRequest

FINAL_REASONS = {api.REASON_COMPLETED, api.REASON_STEP_FAILED, api.REASON_INVALID_SPEC}
UNKNOWN = ConditionStatus.UNKNOWN


def model_name(ref: ObjectRef, spec: api.BertTrainingSpec) -> str:
    return spec.model.name or ref.name


def output_uri(ref: ObjectRef, spec: api.BertTrainingSpec, config: OperatorConfig) -> str:
    if spec.output_uri:
        return f"{spec.output_uri.rstrip('/')}/g{ref.generation}"
    return config.artifact_uri(ref.namespace, "models", ref.name, f"g{ref.generation}")


def model_manifest(ref: ObjectRef, spec: api.BertTrainingSpec) -> dict[str, Any]:
    """The BertModel a successful run registers (owned by the run)."""
    labels = {"app.kubernetes.io/part-of": "bertops", "bertops.io/training": ref.name}
    body: dict[str, Any] = {"task": spec.task, "trainingRef": {"name": ref.name}}
    if spec.model.family:
        body["family"] = spec.model.family
        labels["bertops.io/family"] = spec.model.family
    return {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": "BertModel",
        "metadata": {
            "name": model_name(ref, spec),
            "namespace": ref.namespace,
            "labels": labels,
            "ownerReferences": [ref.owner_reference()],
        },
        "spec": body,
    }


def is_settled(ref: ObjectRef, status: api.BertTrainingStatus) -> bool:
    return settled(
        status.observed_generation, status.conditions, api.SUCCEEDED, FINAL_REASONS, ref.generation
    )


def plan(
    ref: ObjectRef,
    obj: api.BertTraining,
    dataset: dataset_api.BertDataset | None,
    observed: StepObservation,
    *,
    model_exists: bool,
    config: OperatorConfig,
    now: datetime,
) -> Plan:
    status = obj.status.model_copy(deep=True)
    result = Plan()
    spec = obj.spec
    gen = ref.generation
    if is_settled(ref, status):
        done = find_condition(status.conditions, api.SUCCEEDED)
        if done and done.reason == api.REASON_COMPLETED and not model_exists:
            result.create.append(model_manifest(ref, spec))  # level-based: re-create if lost
        return result

    name = step_name(ref.name, "train", gen)
    conditions = status.conditions
    events = result.events
    if status.step and status.step != name:
        result.stop.append(status.step)
    status.observed_generation = gen

    def set_(
        cond_status: bool | ConditionStatus, reason: str, message: str, warning: bool = False
    ) -> None:
        transition(
            conditions,
            api.SUCCEEDED,
            cond_status,
            reason,
            message,
            now=now,
            generation=gen,
            events=events,
            warning=warning,
        )
        progressing = reason == api.REASON_TRAINING
        transition(
            conditions,
            api.PROGRESSING,
            progressing,
            reason,
            message,
            now=now,
            generation=gen,
            events=[],
        )

    dataset_ref = spec.dataset_ref.name
    if observed.phase == StepPhase.ABSENT:
        if spec.engine == "argo":
            # Accepted by the schema for forward compatibility, refused here rather than
            # silently run natively.
            set_(
                False,
                api.REASON_INVALID_SPEC,
                "spec.engine 'argo' is not supported by this operator version; use engine 'native'",
                warning=True,
            )
        elif dataset is None:
            set_(
                UNKNOWN,
                api.REASON_DATASET_NOT_FOUND,
                f"BertDataset {dataset_ref!r} not found in namespace {ref.namespace}; "
                "create it or fix spec.datasetRef",
                warning=True,
            )
            result.requeue = True
        elif not is_true(dataset.status.conditions, dataset_api.READY):
            ready = find_condition(dataset.status.conditions, dataset_api.READY)
            failed = ready is not None and ready.reason in (
                dataset_api.REASON_INVALID_DATA,
                dataset_api.REASON_STEP_FAILED,
            )
            detail = f": {ready.reason}: {ready.message}" if ready else ""
            set_(
                UNKNOWN,
                api.REASON_WAITING_FOR_DATASET,
                short(f"waiting for BertDataset {dataset_ref!r} to be Ready{detail}"),
                warning=failed,
            )
            result.requeue = True
        else:
            assert dataset.status.artifact_uri
            status.step = name
            status.started_at = now
            status.dataset_checksum = dataset.status.checksum
            status.attempts = (status.attempts or 0) + 1
            status.progress = api.TrainingProgress(
                total_epochs=spec.hyperparameters.epochs, display=f"0/{spec.hyperparameters.epochs}"
            )
            result.start = StepRequest(
                name=name,
                namespace=ref.namespace,
                spec=TrainStep(
                    name=name,
                    training=spec,
                    dataset_uri=dataset.status.artifact_uri,
                    output_uri=output_uri(ref, spec, config),
                    model_name=model_name(ref, spec),
                ),
                replicas=spec.replicas,
                cpu=spec.resources.cpu,
                memory=spec.resources.memory,
                gpu=spec.resources.gpu,
                owner=ref.owner_reference(),
            )
            set_(
                UNKNOWN,
                api.REASON_TRAINING,
                f"train step {name} started ({spec.replicas} replica(s))",
            )
            result.requeue = True
    elif observed.phase == StepPhase.RUNNING:
        status.step = name
        event = observed.progress
        if event is not None:
            total = event.total_epochs or spec.hyperparameters.epochs
            status.progress = api.TrainingProgress(
                epoch=event.epoch or 0,
                total_epochs=total,
                step=event.step or 0,
                total_steps=event.total_steps or 0,
                loss=event.loss,
                samples_per_second=event.samples_per_second,
                eta_seconds=event.eta_seconds,
                display=f"{event.epoch or 0}/{total}",
            )
        message = f"train step {name} running"
        if status.progress and status.progress.loss is not None:
            p = status.progress
            message += f": epoch {p.display}, step {p.step}/{p.total_steps}, loss {p.loss:.4f}"
            if p.eta_seconds is not None:
                message += f", ETA {p.eta_seconds:.0f}s"
        set_(UNKNOWN, api.REASON_TRAINING, message)
        result.requeue = True
    elif observed.phase == StepPhase.SUCCEEDED and observed.result is not None:
        details = observed.result.details
        status.step = name
        status.completed_at = now
        status.model_name = details.get("modelName") or model_name(ref, spec)
        status.artifact_uri = observed.result.artifacts.get("model")
        status.dataset_checksum = details.get("datasetChecksum", status.dataset_checksum)
        if details.get("validationMetrics"):
            status.validation_metrics = api.ClassificationMetrics.model_validate(
                details["validationMetrics"]
            )
        if details.get("testMetrics"):
            status.test_metrics = api.ClassificationMetrics.model_validate(details["testMetrics"])
        epochs = int(details.get("epochsRun") or spec.hyperparameters.epochs)
        status.progress = api.TrainingProgress(
            epoch=epochs,
            total_epochs=spec.hyperparameters.epochs,
            display=f"{epochs}/{spec.hyperparameters.epochs}",
            loss=(status.progress.loss if status.progress else None),
        )
        accuracy = status.test_metrics.accuracy if status.test_metrics else None
        summary = f"accuracy {accuracy:.3f} on test" if accuracy is not None else "done"
        set_(True, api.REASON_COMPLETED, f"registered BertModel {status.model_name}: {summary}")
        if not model_exists:
            result.create.append(model_manifest(ref, spec))
    else:
        status.step = name
        status.completed_at = now
        bad_input = observed.result is not None and observed.result.exit_code == ExitCode.BAD_INPUT
        reason = api.REASON_INVALID_SPEC if bad_input else api.REASON_STEP_FAILED
        message = observed.message or (observed.result.message if observed.result else "")
        set_(False, reason, short(message), warning=True)

    new_status = status.to_wire()
    if new_status != obj.status.to_wire():
        result.status = new_status
    return result
