"""Planner for BertModel. Each origin ends in Ready with measured facts:

- ``trainingRef``: once the run succeeded, verify its artifact manifest and record
  metrics, size and lineage;
- ``compression``: once the parent is Ready, run a ``compress`` step and record the
  measured variant, or QualityGateFailed when it loses too much;
- ``artifactUri``: run an ``evaluate`` step on the evaluation dataset (or only verify
  the manifest when none is named).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bertops.api import model as api
from bertops.api import training as training_api
from bertops.api.artifacts import ModelManifest
from bertops.api.meta import ConditionStatus, find_condition, is_true
from bertops.api.steps import CompressStep, EvaluateStep, ExitCode, StepResult
from bertops.operator.config import OperatorConfig
from bertops.operator.planners.common import ObjectRef, Plan, short, step_name, transition
from bertops.operator.runtime.base import StepObservation, StepPhase, StepRequest

FINAL_REASONS = {
    api.REASON_VERIFIED,
    api.REASON_GATE_FAILED,
    api.REASON_VERIFICATION_FAILED,
    api.REASON_STEP_FAILED,
}
UNKNOWN = ConditionStatus.UNKNOWN


@dataclass(frozen=True)
class ArtifactInfo:
    """What the reconciler found at an artifact URI (read and verified outside)."""

    uri: str
    manifest: ModelManifest | None = None
    manifest_sha256: str | None = None
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ModelWorld:
    """Everything a BertModel plan depends on besides itself."""

    training: training_api.BertTraining | None = None
    parent: api.BertModel | None = None
    dataset_uri: str | None = None  # compression/evaluation data, already resolved
    dataset_problem: str | None = None
    artifact: ArtifactInfo | None = None  # the artifact to verify (training/external)
    step: StepObservation = field(default_factory=lambda: StepObservation(StepPhase.ABSENT))


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.1f}{unit}" if unit != "B" else f"{int(value)}B"
        value /= 1000
    return f"{value:.1f}GB"


def output_uri(ref: ObjectRef, config: OperatorConfig) -> str:
    return config.artifact_uri(ref.namespace, "models", ref.name, f"g{ref.generation}")


def apply_manifest(status: api.BertModelStatus, info: ArtifactInfo) -> None:
    manifest = info.manifest
    assert manifest is not None
    status.artifact_uri = info.uri
    status.manifest_sha256 = info.manifest_sha256
    status.format = manifest.format
    status.labels = manifest.labels
    test = manifest.metrics.get("test") or {}
    if test:
        status.metrics = training_api.ClassificationMetrics.model_validate(test)
    size = sum(f.bytes for f in manifest.files)
    measured = manifest.measurements
    status.size = api.ModelSize(
        parameters=measured.get("parameters"),
        bytes_on_disk=measured.get("bytesOnDisk", size),
        display=human_bytes(int(measured.get("bytesOnDisk", size))),
    )
    if measured.get("latency"):
        status.latency = api.Latency.model_validate(measured["latency"])
    if measured.get("qualityDelta"):
        status.quality_delta = api.QualityDelta.model_validate(measured["qualityDelta"])
    status.lineage = manifest.lineage


def settled(ref: ObjectRef, status: api.BertModelStatus) -> bool:
    ready = find_condition(status.conditions, api.READY)
    return (
        status.observed_generation == ref.generation
        and ready is not None
        and ready.reason in FINAL_REASONS
        and ready.observed_generation == ref.generation
    )


def plan(
    ref: ObjectRef,
    obj: api.BertModel,
    world: ModelWorld,
    *,
    config: OperatorConfig,
    now: datetime,
) -> Plan:
    status = obj.status.model_copy(deep=True)
    result = Plan()
    if settled(ref, status):
        return result
    gen = ref.generation
    status.observed_generation = gen
    spec = obj.spec

    def ready(
        value: bool | ConditionStatus, reason: str, message: str, warning: bool = False
    ) -> None:
        transition(
            status.conditions,
            api.READY,
            value,
            reason,
            short(message),
            now=now,
            generation=gen,
            events=result.events,
            warning=warning,
        )

    def verified(info: ArtifactInfo, what: str) -> None:
        if info.problems or info.manifest is None:
            problems = "; ".join(info.problems) or "no manifest"
            ready(
                False,
                api.REASON_VERIFICATION_FAILED,
                f"artifact {info.uri} failed verification: {problems}",
                warning=True,
            )
            return
        apply_manifest(status, info)
        status.registered_at = status.registered_at or now
        f1 = status.metrics.macro_f1 if status.metrics else None
        quality = f", macro-F1 {f1:.3f}" if f1 is not None else ""
        ready(
            True,
            api.REASON_VERIFIED,
            f"{what}{quality}, {status.size.display if status.size else ''}",
        )

    if spec.training_ref is not None:
        training = world.training
        if training is None:
            ready(
                UNKNOWN,
                api.REASON_TRAINING_NOT_FOUND,
                f"BertTraining {spec.training_ref.name!r} not found",
                warning=True,
            )
            result.requeue = True
        elif not is_true(training.status.conditions, training_api.SUCCEEDED):
            ready(
                UNKNOWN,
                api.REASON_WAITING_FOR_TRAINING,
                f"waiting for BertTraining {spec.training_ref.name!r} to succeed",
            )
            result.requeue = True
        elif world.artifact is None:
            ready(UNKNOWN, api.REASON_WAITING_FOR_TRAINING, "training artifact not readable yet")
            result.requeue = True
        else:
            verified(world.artifact, f"verified artifact of run {spec.training_ref.name}")
    elif spec.compression is not None:
        _plan_step(ref, obj, world, status, result, config=config, ready=ready, verified=verified)
    else:
        assert spec.artifact_uri is not None
        if spec.evaluation_dataset_ref is None:
            if world.artifact is None:
                ready(UNKNOWN, api.REASON_EVALUATING, f"reading {spec.artifact_uri}")
                result.requeue = True
            else:
                verified(world.artifact, "verified external artifact")
        else:
            _plan_step(
                ref, obj, world, status, result, config=config, ready=ready, verified=verified
            )

    new_status = status.to_wire()
    if new_status != obj.status.to_wire():
        result.status = new_status
    return result


def _plan_step(ref, obj, world, status, result, *, config, ready, verified) -> None:
    """Compression or evaluation: both run one step, then verify what it produced."""
    spec = obj.spec
    compress = spec.compression is not None
    code = "cmp" if compress else "eval"
    name = step_name(ref.name, code, ref.generation)
    observed: StepObservation = world.step
    if compress and observed.phase == StepPhase.ABSENT:
        parent = world.parent
        parent_name = spec.compression.parent_ref.name
        if parent is None:
            ready(
                UNKNOWN,
                api.REASON_PARENT_NOT_FOUND,
                f"parent BertModel {parent_name!r} not found",
                warning=True,
            )
            result.requeue = True
            return
        if not is_true(parent.status.conditions, api.READY) or not parent.status.artifact_uri:
            ready(
                UNKNOWN,
                api.REASON_WAITING_FOR_PARENT,
                f"waiting for parent BertModel {parent_name!r} to be Ready",
            )
            result.requeue = True
            return
    if observed.phase == StepPhase.ABSENT:
        if world.dataset_uri is None:
            ready(
                UNKNOWN,
                api.REASON_DATASET_NOT_FOUND,
                world.dataset_problem or "no dataset to evaluate on",
                warning=True,
            )
            result.requeue = True
            return
        step: CompressStep | EvaluateStep
        if compress:
            step = CompressStep(
                name=name,
                parent_uri=world.parent.status.artifact_uri,
                dataset_uri=world.dataset_uri,
                output_uri=output_uri(ref, config),
                compression=spec.compression,
                model_name=ref.name,
            )
            message = f"compress step {name} started: " + " -> ".join(
                s.method for s in spec.compression.steps
            )
        else:
            step = EvaluateStep(
                name=name, model_uri=spec.artifact_uri, dataset_uri=world.dataset_uri
            )
            message = f"evaluate step {name} started"
        status.step = name
        result.start = StepRequest(
            name=name, namespace=ref.namespace, spec=step, owner=ref.owner_reference()
        )
        ready(UNKNOWN, api.REASON_COMPRESSING if compress else api.REASON_EVALUATING, message)
        result.requeue = True
    elif observed.phase == StepPhase.RUNNING:
        status.step = name
        ready(
            UNKNOWN,
            api.REASON_COMPRESSING if compress else api.REASON_EVALUATING,
            f"step {name} running"
            + (
                f": {observed.progress.message}"
                if observed.progress and observed.progress.message
                else ""
            ),
        )
        result.requeue = True
    elif observed.phase == StepPhase.SUCCEEDED and observed.result is not None:
        step_result: StepResult = observed.result
        uri = step_result.artifacts.get("model") or spec.artifact_uri
        if world.artifact is None or world.artifact.uri != uri:
            ready(
                UNKNOWN,
                api.REASON_COMPRESSING if compress else api.REASON_EVALUATING,
                f"reading the artifact at {uri}",
            )
            result.requeue = True
            return
        if not compress and world.artifact.manifest is not None:
            # Evaluation measured fresh metrics on the named dataset: they win.
            world.artifact.manifest.metrics["test"] = step_result.details.get(
                "metrics", world.artifact.manifest.metrics.get("test", {})
            )
        verified(world.artifact, "compressed and measured" if compress else "evaluated")
    else:
        result_doc = observed.result
        gate = result_doc is not None and result_doc.reason == api.REASON_GATE_FAILED
        bad = result_doc is not None and result_doc.exit_code == ExitCode.BAD_INPUT
        reason = (
            api.REASON_GATE_FAILED
            if gate
            else (
                api.REASON_VERIFICATION_FAILED if bad and not compress else api.REASON_STEP_FAILED
            )
        )
        message = observed.message or (result_doc.message if result_doc else "step failed")
        if result_doc is not None and result_doc.details.get("qualityDelta"):
            status.quality_delta = api.QualityDelta.model_validate(
                result_doc.details["qualityDelta"]
            )
        ready(False, reason, message, warning=True)
