"""Planner for BertDataset: one ``prepare`` step per generation; its result becomes the
status (rows, labels, checksum, artifact URI, holdout) and the Ready condition."""

from __future__ import annotations

from datetime import datetime

from bertops.api import dataset as api
from bertops.api.steps import ExitCode, PrepareDetails, PrepareStep, StepResult
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
    api.REASON_PREPARED,
    api.REASON_INVALID_DATA,
    api.REASON_STEP_FAILED,
    api.REASON_INVALID_SPEC,
    REASON_RESULT_UNREADABLE,
}


def output_uri(ref: ObjectRef, spec: api.BertDatasetSpec, config: OperatorConfig) -> str:
    if spec.output_uri:
        return f"{spec.output_uri.rstrip('/')}/g{ref.generation}"
    return config.artifact_uri(ref.namespace, "datasets", ref.name, f"g{ref.generation}")


def is_settled(ref: ObjectRef, status: api.BertDatasetStatus) -> bool:
    return settled(
        status.observed_generation, status.conditions, api.READY, FINAL_REASONS, ref.generation
    )


def plan(
    ref: ObjectRef,
    obj: api.BertDataset,
    observed: StepObservation,
    *,
    config: OperatorConfig,
    now: datetime,
) -> Plan:
    status = obj.status.model_copy(deep=True)
    result = Plan()
    if is_settled(ref, status):
        return result
    gen = ref.generation
    attempt = current_attempt(status.observed_generation, status.attempts, gen)
    name = step_name(ref.name, "prep", gen, ref.uid, attempt)
    conditions = status.conditions
    if status.step and status.step != name:
        result.stop.append(status.step)  # a newer generation supersedes the running step
    status.step = name
    if status.observed_generation != gen:
        status.attempts = None  # counted per generation; set when a step starts
    status.observed_generation = gen

    if observed.phase == StepPhase.ABSENT:
        _start(ref, obj, status, attempt, config, now, result)
    elif observed.phase == StepPhase.RUNNING:
        message = f"prepare step {name} running"
        if observed.progress and observed.progress.message:
            message += f": {observed.progress.message}"
        transition(
            conditions,
            api.READY,
            False,
            api.REASON_PREPARING,
            message,
            now=now,
            generation=gen,
            events=result.events,
        )
    elif observed.phase == StepPhase.SUCCEEDED and observed.result is not None:
        prepared(status, observed.result, now)
        result.events += checks.unknown_fields(observed.result)
        rows = status.rows.total if status.rows else 0
        transition(
            status.conditions,
            api.READY,
            True,
            api.REASON_PREPARED,
            f"{rows} rows prepared, checksum {status.short_checksum}",
            now=now,
            generation=gen,
            events=result.events,
        )
    else:
        _failed(ref, obj, status, observed, attempt, config, now, result)

    new_status = status.to_wire()
    if new_status != obj.status.to_wire():
        result.status = new_status
    return result


def prepared(status: api.BertDatasetStatus, result: StepResult, now: datetime) -> None:
    """Copy the prepare step's typed facts into status, field by field."""
    found = result.details if isinstance(result.details, PrepareDetails) else PrepareDetails()
    status.artifact_uri = result.artifacts.get("dataset") or found.artifact_uri
    status.checksum = result.checksums.get("dataset") or found.checksum
    status.short_checksum = (status.checksum or "")[:12] or None
    status.rows = api.RowCounts.model_validate(found.rows) if found.rows else None
    status.labels = found.labels
    status.num_labels = found.num_labels
    status.label_counts = found.label_counts
    status.dropped_rows = found.dropped_rows
    status.token_length_p50 = found.token_length_p50
    status.token_length_p95 = found.token_length_p95
    status.unknown_token_rate = found.unknown_token_rate
    status.holdout_uri = result.artifacts.get("holdout") or found.holdout_uri
    status.holdout_rows = found.holdout_rows
    status.prepared_at = now


def _start(
    ref: ObjectRef,
    obj: api.BertDataset,
    status: api.BertDatasetStatus,
    attempt: int,
    config: OperatorConfig,
    now: datetime,
    result: Plan,
) -> None:
    """Start the given attempt of this generation's prepare step (unless the spec is
    refused: URIs outside the allowlist, a Secret the runtime cannot pass)."""
    try:
        checks.check_dataset(obj.spec, config, ref.namespace)
    except checks.SpecError as error:
        transition(
            status.conditions,
            api.READY,
            False,
            error.reason,
            short(error.message),
            now=now,
            generation=ref.generation,
            events=result.events,
            warning=True,
        )
        return
    name = step_name(ref.name, "prep", ref.generation, ref.uid, attempt)
    status.step, status.attempts = name, attempt
    result.start = StepRequest(
        name=name,
        namespace=ref.namespace,
        spec=PrepareStep(name=name, dataset=obj.spec, output_uri=output_uri(ref, obj.spec, config)),
        owner=ref.owner_reference(),
        env_secrets=checks.dataset_secret_names(obj.spec),
    )
    transition(
        status.conditions,
        api.READY,
        False,
        api.REASON_PREPARING,
        f"prepare step {name} started" + (f" (attempt {attempt})" if attempt > 1 else ""),
        now=now,
        generation=ref.generation,
        events=result.events,
    )


def _failed(
    ref: ObjectRef,
    obj: api.BertDataset,
    status: api.BertDatasetStatus,
    observed: StepObservation,
    attempt: int,
    config: OperatorConfig,
    now: datetime,
    result: Plan,
) -> None:
    """A failed attempt: start the next one when due, wait for it, or give up."""
    retry = plan_retry(observed, attempt, config, now)
    if retry is not None and retry.due:
        note_retry(status.conditions, api.READY, retry, result.events)
        _start(ref, obj, status, retry.attempt, config, now, result)
        return
    bad_input = observed.effective_exit_code == ExitCode.BAD_INPUT
    if retry is not None:
        reason, message = REASON_RETRYING, retry.message
    elif observed.reason == REASON_RESULT_UNREADABLE:
        reason, message = REASON_RESULT_UNREADABLE, observed.message
    else:
        reason = api.REASON_INVALID_DATA if bad_input else api.REASON_STEP_FAILED
        message = observed.message or (observed.result.message if observed.result else "")
        if bad_input:
            message += " (fix the data or the spec; a new generation retries)"
        elif attempt > 1:
            message += f" (gave up after {attempt} attempts)"
    transition(
        status.conditions,
        api.READY,
        False,
        reason,
        short(message),
        now=now,
        generation=ref.generation,
        events=result.events,
        warning=True,
    )
