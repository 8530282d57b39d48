"""Planner for BertDataset: one ``prepare`` step per generation; its result becomes the
status (rows, labels, checksum, artifact URI) and the Ready condition."""

from __future__ import annotations

from datetime import datetime

from bertops.api import dataset as api
from bertops.api.steps import ExitCode, PrepareStep
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

FINAL_REASONS = {api.REASON_PREPARED, api.REASON_INVALID_DATA, api.REASON_STEP_FAILED}


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
    name = step_name(ref.name, "prep", ref.generation)
    gen = ref.generation
    conditions = status.conditions
    if status.step and status.step != name:
        result.stop.append(status.step)  # a newer generation supersedes the running step
    status.step = name
    status.observed_generation = gen

    if observed.phase == StepPhase.ABSENT:
        result.start = StepRequest(
            name=name,
            namespace=ref.namespace,
            spec=PrepareStep(
                name=name, dataset=obj.spec, output_uri=output_uri(ref, obj.spec, config)
            ),
            owner=ref.owner_reference(),
        )
        transition(
            conditions,
            api.READY,
            False,
            api.REASON_PREPARING,
            f"prepare step {name} started",
            now=now,
            generation=gen,
            events=result.events,
        )
        result.requeue = True
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
        result.requeue = True
    elif observed.phase == StepPhase.SUCCEEDED and observed.result is not None:
        details = observed.result.details
        status = api.BertDatasetStatus.model_validate(
            {**status.model_dump(by_alias=True), **details, "preparedAt": now}
        )
        status.artifact_uri = observed.result.artifacts.get("dataset", status.artifact_uri)
        status.checksum = observed.result.checksums.get("dataset", status.checksum)
        status.short_checksum = (status.checksum or "")[:12] or None
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
        bad_input = observed.result is not None and observed.result.exit_code == ExitCode.BAD_INPUT
        reason = api.REASON_INVALID_DATA if bad_input else api.REASON_STEP_FAILED
        message = observed.message or (observed.result.message if observed.result else "")
        hint = " (fix the data or the spec; a new generation retries)" if bad_input else ""
        transition(
            conditions,
            api.READY,
            False,
            reason,
            short(f"{message}{hint}"),
            now=now,
            generation=gen,
            events=result.events,
            warning=True,
        )

    new_status = status.to_wire()
    if new_status != obj.status.to_wire():
        result.status = new_status
    return result
