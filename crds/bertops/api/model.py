"""BertModel: one immutable, registered model version with its weights, measured
metrics, lineage and (for compressed variants) the compression recipe.

Three origins, exactly one per object: ``trainingRef`` (created by the operator when a
BertTraining succeeds), ``artifactUri`` (an external artifact to verify and evaluate),
or ``compression`` (a recipe applied to a parent BertModel by a ``compress`` step).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field
from pydantic.alias_generators import to_snake

from bertops.api import reasons
from bertops.api.meta import (
    API_VERSION,
    ApiModel,
    DnsName,
    LocalObjectReference,
    Rule,
    StatusBase,
    StatusModel,
    cel,
    exactly_one,
)
from bertops.api.training import ClassificationMetrics, RetrainTrigger, Task

READY = "Ready"
REASON_VERIFIED = "Verified"
REASON_COMPRESSING = "Compressing"
REASON_EVALUATING = "Evaluating"
REASON_WAITING_FOR_PARENT = "WaitingForParent"
REASON_WAITING_FOR_TRAINING = "WaitingForTraining"
REASON_TRAINING_NOT_FOUND = "TrainingNotFound"
REASON_DATASET_NOT_FOUND = reasons.REASON_DATASET_NOT_FOUND
REASON_PARENT_NOT_FOUND = "ParentNotFound"
REASON_GATE_FAILED = "QualityGateFailed"
REASON_VERIFICATION_FAILED = "VerificationFailed"
REASON_STEP_FAILED = reasons.REASON_STEP_FAILED
REASON_INVALID_SPEC = reasons.REASON_INVALID_SPEC
REASON_UNSUPPORTED_TASK = reasons.REASON_UNSUPPORTED_TASK

CompressionMethod = Literal["magnitudePrune", "headPrune", "quantize", "onnxExport", "distill"]

_METHOD_FIELDS = {
    # Each method's settings are refused on other methods, so a misplaced field is an error.
    "sparsity": "magnitudePrune",
    "scope": "magnitudePrune",
    "headsToPrune": "headPrune",
    "granularity": "quantize",
    "backend": "quantize",
    "studentLayers": "distill",
    "temperature": "distill",
    "alpha": "distill",
}


def _misplaced(field: str, method: str) -> Rule:
    python_name = to_snake(field)
    return Rule(
        f"!has(self.{field}) || self.method == '{method}'",
        f"{field} only applies to method {method}",
        lambda s: getattr(s, python_name) is None or s.method == method,
    )


class CompressionStep(ApiModel):
    """One method in a recipe. Steps compose in order (e.g. distill, prune, quantize)."""

    model_config = cel(
        Rule(
            "self.method != 'magnitudePrune' || has(self.sparsity)",
            "magnitudePrune needs sparsity (a fraction in (0, 1))",
            lambda s: s.method != "magnitudePrune" or s.sparsity is not None,
        ),
        Rule(
            "self.method != 'headPrune' || has(self.headsToPrune)",
            "headPrune needs headsToPrune",
            lambda s: s.method != "headPrune" or s.heads_to_prune is not None,
        ),
        Rule(
            "!(self.method in ['quantize', 'onnxExport']) || "
            "!has(self.fineTuneEpochs) || self.fineTuneEpochs == 0",
            "fineTuneEpochs does not apply to quantize or onnxExport",
            lambda s: s.method not in ("quantize", "onnxExport") or not s.fine_tune_epochs,
        ),
        *(_misplaced(field, method) for field, method in _METHOD_FIELDS.items()),
    )

    method: CompressionMethod
    sparsity: float | None = Field(
        default=None, gt=0, lt=1, description="Fraction of weights zeroed."
    )
    scope: Literal["global", "perLayer"] | None = None
    heads_to_prune: int | None = Field(
        default=None, ge=1, le=4096, description="Attention heads removed in total."
    )
    granularity: Literal["perTensor", "perChannel"] | None = None
    backend: Literal["torch", "onnxruntime"] | None = None
    student_layers: int | None = Field(default=None, ge=1, le=48)
    temperature: float | None = Field(default=None, gt=0, le=100)
    alpha: float | None = Field(
        default=None, ge=0, le=1, description="Weight of the soft (teacher) loss."
    )
    fine_tune_epochs: int = Field(default=0, ge=0, le=20, description="Recovery fine-tune after.")


class QualityGate(ApiModel):
    max_accuracy_drop: float = Field(default=0.01, ge=0, le=1)
    max_f1_drop: float = Field(default=0.01, ge=0, le=1)


def _methods(compression: Any) -> list[str]:
    return [step.method for step in compression.steps]


def _in_order(ranks: list[int]) -> bool:
    """Python twin of CEL ``isSorted()`` on a list of ints."""
    return ranks == sorted(ranks)


# Ordering rules of a recipe that hold whatever the parent is (the trainer's recipe planner
# adds the parent-dependent ones: head counts, layers, an already quantized parent). Each
# maps steps to integer ranks and asks for them in order: the API server's cost estimate
# of list functions over strings built by map() is unbounded, over ints it is not.
RECIPE_RULES = (
    Rule(
        "self.steps.filter(s, s.method == 'quantize').size() <= 1 && "
        "self.steps.map(s, s.method == 'quantize' ? 1 : 0).isSorted()",
        "quantize must be the last step: nothing can follow quantize",
        lambda c: (
            _in_order([int(m == "quantize") for m in _methods(c)])
            and _methods(c).count("quantize") <= 1
        ),
    ),
    Rule(
        "self.steps.filter(s, s.method == 'onnxExport').size() <= 1",
        "onnxExport may appear only once (the model is already exported after it)",
        lambda c: _methods(c).count("onnxExport") <= 1,
    ),
    Rule(
        "self.steps.filter(s, s.method != 'quantize')"
        ".map(s, s.method == 'onnxExport' ? 1 : 0).isSorted()",
        "magnitudePrune, headPrune and distill run on torch weights, "
        "so they must come before onnxExport",
        lambda c: _in_order([int(m == "onnxExport") for m in _methods(c) if m != "quantize"]),
    ),
    Rule(
        "self.steps.filter(s, s.method == 'distill' || s.method == 'headPrune')"
        ".map(s, s.method == 'headPrune' ? 1 : 0).isSorted()",
        "distill must come before headPrune (a student is cut from whole teacher layers)",
        lambda c: _in_order(
            [int(m == "headPrune") for m in _methods(c) if m in ("distill", "headPrune")]
        ),
    ),
    Rule(
        "!self.steps.exists(s, s.method == 'onnxExport') || "
        "self.steps.all(s, s.method != 'quantize' || !has(s.backend) || "
        "s.backend == 'onnxruntime')",
        "an exported ONNX model is quantized with backend onnxruntime, not torch",
        lambda c: (
            "onnxExport" not in _methods(c)
            or all(s.method != "quantize" or s.backend in (None, "onnxruntime") for s in c.steps)
        ),
    ),
)


class Compression(ApiModel):
    model_config = cel(*RECIPE_RULES)

    parent_ref: LocalObjectReference = Field(description="The BertModel to compress.")
    steps: list[CompressionStep] = Field(min_length=1, max_length=10)
    gate: QualityGate = Field(default_factory=QualityGate)
    dataset_ref: LocalObjectReference | None = Field(
        default=None,
        description="Data for fine-tunes, calibration and evaluation "
        "(default: the parent's dataset).",
    )


class BertModelSpec(ApiModel):
    model_config = cel(
        Rule(
            "[has(self.trainingRef), has(self.artifactUri), has(self.compression)]"
            ".filter(x, x).size() == 1",
            "set exactly one of trainingRef, artifactUri or compression",
            lambda s: exactly_one(s, "training_ref", "artifact_uri", "compression"),
        ),
        Rule("self == oldSelf", "a BertModel is immutable; create a new version"),
    )

    family: DnsName | None = Field(default=None, description="Model family for selection.")
    task: Task = "sequenceClassification"
    training_ref: LocalObjectReference | None = None
    artifact_uri: str | None = Field(default=None, min_length=1)
    compression: Compression | None = None
    evaluation_dataset_ref: LocalObjectReference | None = Field(
        default=None, description="Dataset whose test split scores an external artifact."
    )


class ModelSize(StatusModel):
    parameters: int | None = None
    bytes_on_disk: int | None = None
    display: str | None = Field(default=None, description="e.g. 23.1MB")


class Latency(StatusModel):
    """Measured on the machine that ran the step, seq 128."""

    p50_batch1_ms: float | None = None
    p95_batch1_ms: float | None = None
    p50_batch32_ms: float | None = None
    p95_batch32_ms: float | None = None
    throughput_per_second: float | None = None


class QualityDelta(StatusModel):
    accuracy: float | None = None
    macro_f1: float | None = None


class Lineage(StatusModel):
    dataset: str | None = None
    dataset_checksum: str | None = None
    training_run: str | None = None
    base_model: str | None = None
    hyperparameters: dict[str, str] | None = None
    parent_model: str | None = None
    recipe: list[str] | None = None
    code_version: str | None = None
    trigger: RetrainTrigger | None = None


class BertModelStatus(StatusBase):
    artifact_uri: str | None = None
    manifest_sha256: str | None = None
    format: Literal["safetensors", "onnx"] | None = None
    labels: list[str] | None = None
    metrics: ClassificationMetrics | None = None
    size: ModelSize | None = None
    latency: Latency | None = None
    quality_delta: QualityDelta | None = None
    lineage: Lineage | None = None
    registered_at: datetime | None = None
    step: str | None = None
    attempts: int | None = Field(
        default=None,
        ge=1,
        description="Step attempts started for observedGeneration (exit codes 1 and 3 are "
        "retried with backoff, up to the operator's limit).",
    )


class BertModel(ApiModel):
    model_config = {"extra": "ignore"}

    api_version: str = API_VERSION
    kind: Literal["BertModel"] = "BertModel"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: BertModelSpec
    status: BertModelStatus = Field(default_factory=BertModelStatus)
