"""BertDeployment: serving intent. Which model (a fixed reference or a selection policy
over a family), how to roll a new one out (canary steps gated by analysis), and how to
watch for drift and retrain.

The operator turns it into model servers (stable + canary), the gateway's routes, drift
checks and, with a retrain policy, new BertDataset/BertTraining objects. It never writes
this spec, so Argo CD stays in sync while the selected model changes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from bertops.api.meta import (
    ApiModel,
    DnsName,
    LocalObjectReference,
    Resources,
    Rule,
    StatusBase,
    StatusModel,
    cel,
    exactly_one,
)

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
DRIFTED = "Drifted"
REASON_NO_MODEL = "NoModelSelected"
REASON_SERVING = "Serving"
REASON_CANARY = "CanaryInProgress"
REASON_PROMOTED = "Promoted"
REASON_ROLLED_BACK = "RolledBack"
REASON_DRIFT_DETECTED = "DriftDetected"
REASON_NO_DRIFT = "NoDrift"
# Drifted=Unknown reasons: no judgement could be made (yet).
REASON_NOT_ENOUGH_DATA = "NotEnoughData"
REASON_NO_REFERENCE = "ReferencePending"
REASON_REFERENCE_FAILED = "ReferenceFailed"
REASON_DRIFT_CHECK_FAILED = "DriftCheckFailed"
REASON_DRIFT_DISABLED = "DriftMonitoringDisabled"
# Events of the retrain loop.
REASON_RETRAIN_STARTED = "RetrainStarted"
REASON_RETRAIN_SKIPPED = "RetrainSkipped"
REASON_RETRAIN_FAILED = "RetrainFailed"
# Rollout (bertops.operator.rollout): Progressing/Degraded reasons.
REASON_WAITING_FOR_TRAFFIC = "WaitingForTraffic"
REASON_METRICS_UNAVAILABLE = "MetricsUnavailable"
REASON_PAUSED = "RolloutPaused"
REASON_RESUMED = "RolloutResumed"
REASON_RETRY = "RetryAllowed"
REASON_AWAITING_PROMOTION = "AwaitingPromotion"
REASON_ABORTED = "Aborted"
REASON_SUPERSEDED = "Superseded"
REASON_STEP_ADVANCED = "StepAdvanced"
REASON_INVALID_ACTION = "InvalidRolloutAction"
REASON_ACTION_IGNORED = "RolloutActionIgnored"
# One Degraded reason per analysis gate, naming the gate that rolled the canary back.
REASON_ERROR_RATE_GATE = "ErrorRateGateFailed"
REASON_LATENCY_GATE = "LatencyGateFailed"
REASON_LATENCY_RATIO_GATE = "LatencyRatioGateFailed"
REASON_DIVERGENCE_GATE = "DivergenceGateFailed"
REASON_CONFIDENCE_GATE = "ConfidenceGateFailed"
REASON_FEEDBACK_GATE = "FeedbackAccuracyGateFailed"


class ModelSelector(ApiModel):
    family: DnsName
    policy: Literal["latest", "latestPassing", "bestMetric"] = Field(
        default="latestPassing",
        description="latestPassing: newest Ready model of the family that meets minMacroF1.",
    )
    metric: Literal["accuracy", "macroF1"] = "macroF1"
    min_macro_f1: float | None = Field(default=None, ge=0, le=1)
    format: Literal["any", "safetensors", "onnx"] = "any"


class ModelChoice(ApiModel):
    model_config = cel(
        Rule(
            "has(self.ref) != has(self.selector)",
            "set exactly one of model.ref or model.selector",
            lambda s: exactly_one(s, "ref", "selector"),
        ),
    )

    ref: LocalObjectReference | None = None
    selector: ModelSelector | None = None


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler per model server, on CPU (replaces serving.replicas)."""

    model_config = cel(
        Rule(
            "self.maxReplicas >= self.minReplicas",
            "autoscaling.maxReplicas must be at least minReplicas",
            lambda s: s.max_replicas >= s.min_replicas,
        ),
    )

    min_replicas: int = Field(default=1, ge=1, le=100)
    max_replicas: int = Field(ge=1, le=100)
    target_cpu_percent: int = Field(default=70, ge=10, le=100)


class Serving(ApiModel):
    replicas: int = Field(default=1, ge=1, le=100)
    autoscaling: Autoscaling | None = None
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    max_batch_wait_ms: float = Field(default=5, ge=0, le=1000)
    max_texts_per_request: int = Field(default=64, ge=1, le=4096)
    max_chars: int = Field(default=5000, ge=1, le=1000000)
    prediction_log: Literal["text", "hash", "off"] = Field(
        default="hash", description="What the prediction log keeps of each input."
    )
    resources: Resources = Field(default_factory=Resources)


class RolloutStep(ApiModel):
    weight: int = Field(ge=1, le=100, description="Percent of traffic to the canary.")
    pause_seconds: int = Field(default=60, ge=0, le=86400)


class Analysis(ApiModel):
    interval_seconds: int = Field(default=30, ge=1, le=3600)
    min_requests: int = Field(default=50, ge=0)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_latency_p95_ms: float | None = Field(default=None, gt=0)
    max_latency_ratio: float = Field(default=1.5, ge=1, le=100, description="Canary/stable p95.")
    max_prediction_divergence: float = Field(
        default=0.2, ge=0, le=1, description="Jensen-Shannon distance of label distributions."
    )
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    min_feedback_accuracy: float | None = Field(default=None, ge=0, le=1)
    min_feedback: int = Field(
        default=20, ge=1, description="Feedback labels needed before minFeedbackAccuracy judges."
    )


class Rollout(ApiModel):
    model_config = cel(
        Rule(
            "self.steps.map(s, s.weight).isSorted() && "
            "self.steps.all(a, self.steps.exists_one(b, b.weight == a.weight))",
            "canary weights must strictly increase from step to step",
            lambda s: all(a.weight < b.weight for a, b in zip(s.steps, s.steps[1:], strict=False)),
        ),
    )

    steps: list[RolloutStep] = Field(
        default_factory=lambda: [
            RolloutStep(weight=10, pause_seconds=60),
            RolloutStep(weight=50, pause_seconds=60),
        ],
        max_length=20,
    )
    analysis: Analysis = Field(default_factory=Analysis)
    auto_promote: bool = True
    paused: bool = False
    shadow: bool = Field(default=False, description="Mirror traffic to the canary first.")


class DriftPolicy(ApiModel):
    enabled: bool = True
    interval_seconds: int = Field(default=300, ge=10, le=86400)
    window_size: int = Field(default=1000, ge=50, le=100000)
    reference_size: int = Field(default=2000, ge=50, le=100000)
    threshold: float = Field(default=0.3, ge=0, le=1, description="Drift score that counts.")
    method: Literal["model", "mmd", "ratio", "distance"] = Field(
        default="model", description="Evidently embedding-drift method."
    )


class RetrainPolicy(ApiModel):
    enabled: bool = False
    cooldown_seconds: int = Field(default=3600, ge=0)
    max_retrains: int = Field(default=3, ge=0, le=1000)
    window_seconds: int = Field(default=86400, ge=60)
    include_feedback: bool = True
    training_ref: LocalObjectReference | None = Field(
        default=None, description="The BertTraining to copy (default: the stable model's run)."
    )


class GitRecord(ApiModel):
    repository: str = Field(min_length=1, description="Path or URL of a Git repository.")
    branch: str = "main"
    path: str = "promotions"


class BertDeploymentSpec(ApiModel):
    model: ModelChoice
    serving: Serving = Field(default_factory=Serving)
    rollout: Rollout = Field(default_factory=Rollout)
    drift: DriftPolicy = Field(default_factory=DriftPolicy)
    retrain: RetrainPolicy = Field(default_factory=RetrainPolicy)
    git_record: GitRecord | None = None


class DriftStatus(StatusModel):
    score: float | None = Field(default=None, description="Share of drifted signals, 0..1.")
    drifted: bool | None = None
    last_check: datetime | None = None
    next_check: datetime | None = None
    report_uri: str | None = None
    window_rows: int | None = None
    model: str | None = Field(default=None, description="The stable model whose traffic counts.")
    reference_uri: str | None = Field(
        default=None, description="The stable model's reference sample (validation split)."
    )
    reference_model: str | None = None
    reference_rows: int | None = None
    signals: dict[str, bool] | None = Field(
        default=None, description="Per compared signal: drifted or not, at the last check."
    )
    message: str | None = None
    step: str | None = Field(default=None, description="The monitor step that runs now.")
    serial: int | None = Field(
        default=None, ge=0, description="Monitor steps started so far (names the next one)."
    )


class RetrainRecord(StatusModel):
    """One drift-triggered retraining and where its chain got to."""

    at: datetime
    drift_score: float | None = None
    report_uri: str | None = None
    dataset: str
    training: str
    model: str | None = Field(default=None, description="The BertModel the training registers.")
    outcome: Literal["Running", "Trained", "Failed", "Promoted", "RolledBack", "NotSelected"] = (
        "Running"
    )
    message: str | None = None


class RetrainStatus(StatusModel):
    count: int = Field(default=0, description="Retrainings started, all time.")
    last_at: datetime | None = None
    last_training: str | None = None
    active: str | None = Field(default=None, description="The retraining that runs now.")
    history: list[RetrainRecord] | None = Field(default=None, max_length=20)


class RolloutRecord(StatusModel):
    model: str
    outcome: Literal["Promoted", "RolledBack", "Aborted"]
    at: datetime
    message: str | None = None


class GateStatus(StatusModel):
    name: str
    result: Literal["Passed", "Failed", "Inconclusive"]
    value: float | None = None
    threshold: float | None = None
    message: str | None = None


class AnalysisStatus(StatusModel):
    at: datetime
    gates: list[GateStatus] = Field(default_factory=list, max_length=20)


class BertDeploymentStatus(StatusBase):
    stable_model: str | None = None
    canary_model: str | None = None
    canary_weight: int | None = None
    rollout_step: int | None = None
    step_started_at: datetime | None = None
    endpoint: str | None = None
    drift: DriftStatus | None = None
    drift_display: str | None = Field(default=None, description="e.g. 0.12 for the column.")
    retrains: RetrainStatus | None = None
    history: list[RolloutRecord] | None = Field(default=None, max_length=50)
    analysis: AnalysisStatus | None = Field(
        default=None, description="The canary's last analysis, gate by gate."
    )
    paused_by_action: bool | None = Field(
        default=None, description="Paused by the bertops.io/rollout-action annotation."
    )
    rejected_model: str | None = Field(
        default=None,
        description="Rolled back or aborted; not rolled out again until the selection moves.",
    )
    handled_actions: list[str] | None = Field(
        default=None,
        max_length=10,
        description="The last bertops.io/rollout-action values applied, newest last.",
    )


class BertDeployment(ApiModel):
    model_config = {"extra": "ignore"}

    api_version: str = "bertops.io/v1alpha1"
    kind: Literal["BertDeployment"] = "BertDeployment"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: BertDeploymentSpec
    status: BertDeploymentStatus = Field(default_factory=BertDeploymentStatus)
