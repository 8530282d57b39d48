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
from bertops.api.meta import ConditionStatus, is_true
from bertops.api.steps import (
    CompressDetails,
    CompressStep,
    EvaluateDetails,
    EvaluateStep,
    ExitCode,
    StepResult,
)
from bertops.operator.config import OperatorConfig
from bertops.operator.objects import ArtifactInfo, ObjectRef, Plan
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
    api.REASON_VERIFIED,
    api.REASON_GATE_FAILED,
    api.REASON_VERIFICATION_FAILED,
    api.REASON_STEP_FAILED,
    REASON_RESULT_UNREADABLE,
}
UNKNOWN = ConditionStatus.UNKNOWN


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


def apply_manifest(
    status: api.BertModelStatus, info: ArtifactInfo, manifest: ModelManifest
) -> None:
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


def is_settled(ref: ObjectRef, status: api.BertModelStatus) -> bool:
    return settled(
        status.observed_generation, status.conditions, api.READY, FINAL_REASONS, ref.generation
    )


class _Planning:
    """One planning pass over a BertModel: the working status, the plan being built and
    the helpers that set Ready (with its Event) — kept together so each branch stays short."""

    def __init__(
        self,
        ref: ObjectRef,
        obj: api.BertModel,
        world: ModelWorld,
        config: OperatorConfig,
        now: datetime,
    ) -> None:
        self.ref, self.obj, self.world, self.config, self.now = ref, obj, world, config, now
        self.spec = obj.spec
        self.status = obj.status.model_copy(deep=True)
        # Step attempts count per generation (only steps, not verification, use them).
        self.attempt = current_attempt(
            obj.status.observed_generation, obj.status.attempts, ref.generation
        )
        if self.status.observed_generation != ref.generation:
            self.status.attempts = None
        self.status.observed_generation = ref.generation
        self.plan = Plan()

    def ready(
        self,
        value: bool | ConditionStatus,
        reason: str,
        message: str,
        warning: bool = False,
    ) -> None:
        transition(
            self.status.conditions,
            api.READY,
            value,
            reason,
            short(message),
            now=self.now,
            generation=self.ref.generation,
            events=self.plan.events,
            warning=warning,
        )

    def verified(self, info: ArtifactInfo, what: str, test_metrics: dict | None = None) -> None:
        manifest = info.manifest
        if info.problems or manifest is None:
            problems = "; ".join(info.problems) or "no manifest"
            self.ready(
                False,
                api.REASON_VERIFICATION_FAILED,
                f"artifact {info.uri} failed verification: {problems}",
                warning=True,
            )
            return
        if test_metrics:
            # Evaluation measured fresh metrics on the named dataset: they win.
            manifest = manifest.model_copy(
                update={"metrics": {**manifest.metrics, "test": test_metrics}}
            )
        apply_manifest(self.status, info, manifest)
        self.status.registered_at = self.status.registered_at or self.now
        f1 = self.status.metrics.macro_f1 if self.status.metrics else None
        quality = f", macro-F1 {f1:.3f}" if f1 is not None else ""
        size = f", {self.status.size.display}" if self.status.size else ""
        self.ready(True, api.REASON_VERIFIED, f"{what}{quality}{size}")

    def from_training(self, training_name: str) -> None:
        training = self.world.training
        if training is None:
            self.ready(
                UNKNOWN,
                api.REASON_TRAINING_NOT_FOUND,
                f"BertTraining {training_name!r} not found",
                warning=True,
            )
        elif not is_true(training.status.conditions, training_api.SUCCEEDED):
            self.ready(
                UNKNOWN,
                api.REASON_WAITING_FOR_TRAINING,
                f"waiting for BertTraining {training_name!r} to succeed",
            )
        elif self.world.artifact is None:
            self.ready(
                UNKNOWN,
                api.REASON_WAITING_FOR_TRAINING,
                "training artifact not readable yet",
            )
        else:
            self.verified(self.world.artifact, f"verified artifact of run {training_name}")

    def external(self, uri: str) -> None:
        if self.world.artifact is None:
            self.ready(UNKNOWN, api.REASON_EVALUATING, f"reading {uri}")
        else:
            self.verified(self.world.artifact, "verified external artifact")

    def parent_ready(self, compression: api.Compression) -> str | None:
        """The parent's artifact URI once it is Ready; otherwise say what we wait for."""
        parent, name = self.world.parent, compression.parent_ref.name
        if parent is None:
            self.ready(
                UNKNOWN,
                api.REASON_PARENT_NOT_FOUND,
                f"parent BertModel {name!r} not found",
                warning=True,
            )
            return None
        if not is_true(parent.status.conditions, api.READY) or not parent.status.artifact_uri:
            self.ready(
                UNKNOWN,
                api.REASON_WAITING_FOR_PARENT,
                f"waiting for parent BertModel {name!r} to be Ready",
            )
            return None
        return parent.status.artifact_uri

    def with_step(self) -> None:
        """Compression or evaluation: both run one step, then verify what it produced."""
        compression = self.spec.compression
        working = api.REASON_COMPRESSING if compression else api.REASON_EVALUATING
        name = self.step_name(self.attempt)
        observed = self.world.step
        self.status.step = name
        if observed.phase == StepPhase.ABSENT:
            self._start(self.attempt, working)
        elif observed.phase == StepPhase.RUNNING:
            progress = observed.progress.message if observed.progress else None
            self.ready(
                UNKNOWN,
                working,
                f"step {name} running" + (f": {progress}" if progress else ""),
            )
        elif observed.phase == StepPhase.SUCCEEDED and observed.result is not None:
            uri = observed.result.artifacts.get("model") or self.spec.artifact_uri
            if self.world.artifact is None or self.world.artifact.uri != uri:
                self.ready(UNKNOWN, working, f"reading the artifact at {uri}")
                return
            details = observed.result.details
            fresh = details.metrics if isinstance(details, EvaluateDetails) else None
            self.plan.events += checks.unknown_fields(observed.result)
            self.verified(
                self.world.artifact,
                "compressed and measured" if compression else "evaluated",
                fresh,
            )
        else:
            self._failed(observed, working)

    def step_name(self, attempt: int) -> str:
        code = "cmp" if self.spec.compression else "eval"
        return step_name(self.ref.name, code, self.ref.generation, self.ref.uid, attempt)

    def _start(self, attempt: int, working: str) -> None:
        name = self.step_name(attempt)
        compression = self.spec.compression
        parent_uri = self.parent_ready(compression) if compression else None
        if compression and parent_uri is None:
            return
        if self.world.dataset_uri is None:
            self.ready(
                UNKNOWN,
                api.REASON_DATASET_NOT_FOUND,
                self.world.dataset_problem or "no dataset to evaluate on",
                warning=True,
            )
            return
        step: CompressStep | EvaluateStep
        if compression is not None and parent_uri is not None:
            step = CompressStep(
                name=name,
                parent_uri=parent_uri,
                dataset_uri=self.world.dataset_uri,
                output_uri=output_uri(self.ref, self.config),
                compression=compression,
                model_name=self.ref.name,
            )
            methods = " -> ".join(s.method for s in compression.steps)
            message = f"compress step {name} started: {methods}"
        elif self.spec.artifact_uri is None:  # the CEL rules make this unreachable
            raise checks.SpecError(
                api.REASON_INVALID_SPEC, "evaluationDatasetRef needs artifactUri to evaluate"
            )
        else:
            step = EvaluateStep(
                name=name, model_uri=self.spec.artifact_uri, dataset_uri=self.world.dataset_uri
            )
            message = f"evaluate step {name} started"
        self.plan.start = StepRequest(
            name=name, namespace=self.ref.namespace, spec=step, owner=self.ref.owner_reference()
        )
        self.status.step, self.status.attempts = name, attempt
        self.ready(UNKNOWN, working, message + (f" (attempt {attempt})" if attempt > 1 else ""))

    def finish(self) -> Plan:
        """The plan, with the new status when it differs from the stored one."""
        new_status = self.status.to_wire()
        if new_status != self.obj.status.to_wire():
            self.plan.status = new_status
        return self.plan

    def _failed(self, observed: StepObservation, working: str) -> None:
        """A failed attempt: start the next one when due, wait for it, or give up."""
        retry = plan_retry(observed, self.attempt, self.config, self.now)
        if retry is not None and retry.due:
            note_retry(self.status.conditions, api.READY, retry, self.plan.events)
            self._start(retry.attempt, working)
            return
        if retry is not None:
            self.ready(UNKNOWN, REASON_RETRYING, retry.message, warning=True)
            return
        compressing = self.spec.compression is not None
        found: StepResult | None = observed.result
        if found is not None and found.reason == api.REASON_GATE_FAILED:
            reason = api.REASON_GATE_FAILED
        elif observed.reason == REASON_RESULT_UNREADABLE:
            reason = REASON_RESULT_UNREADABLE
        elif observed.effective_exit_code == ExitCode.BAD_INPUT and not compressing:
            reason = api.REASON_VERIFICATION_FAILED
        else:
            reason = api.REASON_STEP_FAILED
        details = found.details if found is not None else None
        if isinstance(details, CompressDetails) and details.quality_delta:
            self.status.quality_delta = api.QualityDelta.model_validate(details.quality_delta)
        message = observed.message or (found.message if found else "step failed")
        self.ready(False, reason, message, warning=True)


def plan(
    ref: ObjectRef,
    obj: api.BertModel,
    world: ModelWorld,
    *,
    config: OperatorConfig,
    now: datetime,
) -> Plan:
    if is_settled(ref, obj.status):
        return Plan()
    planning = _Planning(ref, obj, world, config, now)
    spec = obj.spec
    try:
        if spec.training_ref is not None:
            planning.from_training(spec.training_ref.name)
            return planning.finish()
        if world.step.phase == StepPhase.ABSENT:
            checks.check_model(
                spec, config, ref.namespace
            )  # before a step starts or an artifact is read
        if spec.compression is not None or spec.evaluation_dataset_ref is not None:
            planning.with_step()
        elif spec.artifact_uri is not None:
            planning.external(spec.artifact_uri)
        else:  # the CEL rules make this unreachable
            message = "set exactly one of trainingRef, artifactUri or compression"
            raise checks.SpecError(api.REASON_INVALID_SPEC, message)
    except checks.SpecError as error:
        planning.ready(False, error.reason, error.message, warning=True)
    return planning.finish()
