"""Planner for BertTraining: wait for the dataset, run one ``train`` step per generation
(N ranks when replicas > 1), mirror its progress into status, and on success register
an owned BertModel carrying the metrics and lineage (and, for a run a BertDeployment's
retraining started, the label naming that deployment, which the model selection reads).

Called by :class:`bertops.operator.reconcile.Reconciler` with what it observed for a
BertTraining; pure (returns a Plan)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bertops.api import dataset as dataset_api
from bertops.api import training as api
from bertops.api.kinds import API_VERSION
from bertops.api.meta import ConditionStatus, find_condition, is_true
from bertops.api.steps import ExitCode, StepResult, TrainDetails, TrainStep
from bertops.operator.config import OperatorConfig
from bertops.operator.objects import ObjectRef, Plan
from bertops.operator.planners import checks
from bertops.operator.planners.common import (
    REASON_RETRYING,
    current_attempt,
    note_retry,
    plan_retry,
    settled,
    short,
    step_name,
    transition,
)
from bertops.operator.runtime.base import (
    REASON_RESULT_UNREADABLE,
    StepObservation,
    StepPhase,
    StepRequest,
)

FINAL_REASONS = {
    api.REASON_COMPLETED,
    api.REASON_STEP_FAILED,
    api.REASON_INVALID_SPEC,
    api.REASON_UNSUPPORTED_TASK,
    api.REASON_NAME_CONFLICT,
    REASON_RESULT_UNREADABLE,
}
UNKNOWN = ConditionStatus.UNKNOWN


def model_name(ref: ObjectRef, spec: api.BertTrainingSpec) -> str:
    return spec.model.name or ref.name


def output_uri(ref: ObjectRef, spec: api.BertTrainingSpec, config: OperatorConfig) -> str:
    if spec.output_uri:
        return f"{spec.output_uri.rstrip('/')}/g{ref.generation}"
    return config.artifact_uri(ref.namespace, "models", ref.name, f"g{ref.generation}")


def model_manifest(ref: ObjectRef, spec: api.BertTrainingSpec) -> dict[str, Any]:
    """The BertModel a successful run registers (owned by the run). A run started by a
    deployment's retraining labels it with that deployment: the model answers that
    deployment's drift, so another deployment of the family selects it only when shared
    (see :mod:`bertops.operator.rollout.selection`)."""
    labels = {"app.kubernetes.io/part-of": "bertops", "bertops.io/training": ref.name}
    body: dict[str, Any] = {"task": spec.task, "trainingRef": {"name": ref.name}}
    if spec.model.family:
        body["family"] = spec.model.family
        labels["bertops.io/family"] = spec.model.family
    trigger = spec.trigger
    if trigger is not None and trigger.deployment:
        labels[api.RETRAINED_LABEL] = trigger.deployment
        if trigger.share_with_family:
            labels[api.SHARED_WITH_FAMILY_LABEL] = "true"
    return {
        "apiVersion": API_VERSION,
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
    model_foreign: bool = False,
) -> Plan:
    """``model_foreign``: a BertModel of the name this run registers exists and is not
    owned by it (a user's): the run never adopts it and ends in NameConflict."""
    status = obj.status.model_copy(deep=True)
    result = Plan()
    spec = obj.spec
    gen = ref.generation
    if is_settled(ref, status):
        done = find_condition(status.conditions, api.SUCCEEDED)
        if done and done.reason == api.REASON_COMPLETED and not model_exists:
            result.create.append(model_manifest(ref, spec))  # level-based: re-create if lost
        return result

    attempt = current_attempt(status.observed_generation, status.attempts, gen)
    name = step_name(ref.name, "train", gen, ref.uid, attempt)
    if status.step and status.step != name:
        result.stop.append(status.step)
    if status.observed_generation != gen:
        status.attempts = None  # counted per generation; set when a step starts
    status.observed_generation = gen

    def set_(
        cond_status: bool | ConditionStatus, reason: str, message: str, warning: bool = False
    ) -> None:
        _report(status, result, now, gen, cond_status, reason, message, warning)

    if observed.phase == StepPhase.ABSENT:
        if (refusal := _refusal(ref, spec, config, model_foreign)) is not None:
            set_(False, refusal.reason, short(refusal.message), warning=True)
        elif dataset is None:
            set_(UNKNOWN, *_dataset_missing(ref, spec))
        elif (problem := _dataset_not_ready(spec, dataset)) is not None:
            set_(UNKNOWN, *problem)
        else:
            _start(ref, spec, dataset, status, attempt, config, now, result)
    elif observed.phase == StepPhase.RUNNING:
        status.step = name
        set_(UNKNOWN, api.REASON_TRAINING, _running(status, observed, spec, name))
    elif observed.phase == StepPhase.SUCCEEDED and observed.result is not None:
        status.step = name
        status.completed_at = now
        trained(status, observed.result, spec)
        result.events += checks.unknown_fields(observed.result)
        if model_foreign:
            status.model_name = None  # never point lineage or deployments at a stranger
            conflict = _name_conflict(ref, spec)
            set_(False, conflict.reason, conflict.message, warning=True)
        else:
            status.model_name = status.model_name or model_name(ref, spec)
            accuracy = status.test_metrics.accuracy if status.test_metrics else None
            summary = f"accuracy {accuracy:.3f} on test" if accuracy is not None else "done"
            set_(True, api.REASON_COMPLETED, f"registered BertModel {status.model_name}: {summary}")
            if not model_exists:
                result.create.append(model_manifest(ref, spec))
    else:
        status.step = name
        _failed(ref, spec, dataset, status, observed, attempt, config, now, result)

    new_status = status.to_wire()
    if new_status != obj.status.to_wire():
        result.status = new_status
    return result


def trained(status: api.BertTrainingStatus, result: StepResult, spec: api.BertTrainingSpec) -> None:
    """Copy the train step's typed facts into status, field by field."""
    found = result.details if isinstance(result.details, TrainDetails) else TrainDetails()
    status.model_name = found.model_name
    status.artifact_uri = result.artifacts.get("model") or found.artifact_uri
    status.dataset_checksum = found.dataset_checksum or status.dataset_checksum
    metrics = api.ClassificationMetrics.model_validate
    validation, test = found.validation_metrics, found.test_metrics
    status.validation_metrics = metrics(validation) if validation else None
    status.test_metrics = metrics(test) if test else None
    epochs = found.epochs_run or spec.hyperparameters.epochs
    status.progress = api.TrainingProgress(
        epoch=epochs,
        total_epochs=spec.hyperparameters.epochs,
        display=f"{epochs}/{spec.hyperparameters.epochs}",
        loss=(status.progress.loss if status.progress else None),
    )


def _name_conflict(ref: ObjectRef, spec: api.BertTrainingSpec) -> checks.SpecError:
    name = model_name(ref, spec)
    return checks.SpecError(
        api.REASON_NAME_CONFLICT,
        f"BertModel {name!r} already exists and is not owned by this BertTraining; it is "
        "never adopted: delete or rename it, or set spec.model.name to a free name",
    )


def _refusal(
    ref: ObjectRef, spec: api.BertTrainingSpec, config: OperatorConfig, model_foreign: bool
) -> checks.SpecError | None:
    """Why this run may not start at all (checked before any step starts), or None."""
    try:
        checks.check_training(spec, config, ref.namespace)
    except checks.SpecError as error:
        return error
    return _name_conflict(ref, spec) if model_foreign else None


def _report(
    status: api.BertTrainingStatus,
    result: Plan,
    now: datetime,
    generation: int,
    cond_status: bool | ConditionStatus,
    reason: str,
    message: str,
    warning: bool = False,
) -> None:
    """Set Succeeded (with its Event) and Progressing, which is True while a step runs
    or a retry is pending."""
    conditions = status.conditions
    transition(
        conditions,
        api.SUCCEEDED,
        cond_status,
        reason,
        message,
        now=now,
        generation=generation,
        events=result.events,
        warning=warning,
    )
    progressing = reason in (api.REASON_TRAINING, REASON_RETRYING)
    transition(
        conditions,
        api.PROGRESSING,
        progressing,
        reason,
        message,
        now=now,
        generation=generation,
        events=[],
    )


def _dataset_missing(ref: ObjectRef, spec: api.BertTrainingSpec) -> tuple[str, str, bool]:
    """(reason, message, warning) when the referenced dataset does not exist."""
    return (
        api.REASON_DATASET_NOT_FOUND,
        f"BertDataset {spec.dataset_ref.name!r} not found in namespace {ref.namespace}; "
        "create it or fix spec.datasetRef",
        True,
    )


def _dataset_not_ready(
    spec: api.BertTrainingSpec, dataset: dataset_api.BertDataset
) -> tuple[str, str, bool] | None:
    """Why the train step cannot start on this dataset yet (reason, message, warning);
    None: it can."""
    name = spec.dataset_ref.name
    if not is_true(dataset.status.conditions, dataset_api.READY):
        ready = find_condition(dataset.status.conditions, dataset_api.READY)
        failed = ready is not None and ready.reason in (
            dataset_api.REASON_INVALID_DATA,
            dataset_api.REASON_STEP_FAILED,
        )
        detail = f": {ready.reason}: {ready.message}" if ready else ""
        message = short(f"waiting for BertDataset {name!r} to be Ready{detail}")
        return api.REASON_WAITING_FOR_DATASET, message, failed
    if not dataset.status.artifact_uri:
        message = f"BertDataset {name!r} is Ready but records no artifactUri yet"
        return api.REASON_WAITING_FOR_DATASET, message, False
    return None


def _start(
    ref: ObjectRef,
    spec: api.BertTrainingSpec,
    dataset: dataset_api.BertDataset,
    status: api.BertTrainingStatus,
    attempt: int,
    config: OperatorConfig,
    now: datetime,
    result: Plan,
) -> None:
    """Start the given attempt of this generation's train step (the dataset is Ready with
    an artifact: see _dataset_not_ready)."""
    name = step_name(ref.name, "train", ref.generation, ref.uid, attempt)
    status.step = name
    status.started_at = now
    status.completed_at = None
    status.dataset_checksum = dataset.status.checksum
    status.attempts = attempt
    status.progress = api.TrainingProgress(
        total_epochs=spec.hyperparameters.epochs, display=f"0/{spec.hyperparameters.epochs}"
    )
    result.start = StepRequest(
        name=name,
        namespace=ref.namespace,
        spec=TrainStep(
            name=name,
            training=spec,
            dataset_uri=dataset.status.artifact_uri or "",
            output_uri=output_uri(ref, spec, config),
            model_name=model_name(ref, spec),
        ),
        replicas=spec.replicas,
        cpu=spec.resources.cpu,
        memory=spec.resources.memory,
        gpu=spec.resources.gpu,
        owner=ref.owner_reference(),
        env_secrets=checks.secret_names(spec.base_model),
    )
    message = f"train step {name} started ({spec.replicas} replica(s))"
    if attempt > 1:
        message += f", attempt {attempt}"
    _report(status, result, now, ref.generation, UNKNOWN, api.REASON_TRAINING, message)


def _failed(
    ref: ObjectRef,
    spec: api.BertTrainingSpec,
    dataset: dataset_api.BertDataset | None,
    status: api.BertTrainingStatus,
    observed: StepObservation,
    attempt: int,
    config: OperatorConfig,
    now: datetime,
    result: Plan,
) -> None:
    """A failed attempt: start the next one when due (and the dataset is still Ready),
    wait for it, or give up."""
    retry = plan_retry(observed, attempt, config, now)
    problem = _dataset_missing(ref, spec) if dataset is None else _dataset_not_ready(spec, dataset)
    if retry is not None and retry.due and problem is None and dataset is not None:
        note_retry(status.conditions, api.SUCCEEDED, retry, result.events)
        _start(ref, spec, dataset, status, retry.attempt, config, now, result)
        return
    if retry is not None:
        message = retry.message + (f"; {problem[1]}" if problem else "")
        _report(status, result, now, ref.generation, UNKNOWN, REASON_RETRYING, short(message), True)
        return
    status.completed_at = now
    bad_input = observed.effective_exit_code == ExitCode.BAD_INPUT
    if observed.reason == REASON_RESULT_UNREADABLE:
        reason = REASON_RESULT_UNREADABLE
    else:
        reason = api.REASON_INVALID_SPEC if bad_input else api.REASON_STEP_FAILED
    message = observed.message or (observed.result.message if observed.result else "")
    if attempt > 1 and not bad_input:
        message += f" (gave up after {attempt} attempts)"
    _report(status, result, now, ref.generation, False, reason, short(message), True)


def _running(
    status: api.BertTrainingStatus,
    observed: StepObservation,
    spec: api.BertTrainingSpec,
    name: str,
) -> str:
    """Mirror the step's newest progress into status; return the condition message."""
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
    return message
