"""BertDeployment: serving intent. Which model (a fixed reference or a selection policy
over a family), how to roll a new one out (canary steps gated by analysis), and how to
watch for drift and retrain.

The operator turns it into model servers (stable + canary), the gateway's routes, drift
checks and, with a retrain policy, new BertDataset/BertTraining objects. It never writes
this spec, so Argo CD stays in sync while the selected model changes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bertops.api.deployment_status import (
    AnalysisStatus,
    BertDeploymentStatus,
    ChallengeScore,
    ChallengeStatus,
    DriftStatus,
    GateStatus,
    RetrainRecord,
    RetrainStatus,
    RetrainWait,
    RolloutRecord,
)
from bertops.api.meta import (
    API_VERSION,
    ApiModel,
    DnsName,
    LocalObjectReference,
    Resources,
    Rule,
    cel,
    exactly_one,
)

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
DRIFTED = "Drifted"
REASON_NO_MODEL = "NoModelSelected"
REASON_SERVING = "Serving"
# Ready=False while the servers and the gateway of the decided model start (no endpoint).
REASON_SERVERS_STARTING = "ServersStarting"
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
REASON_PAIRED_FEEDBACK_GATE = "PairedAccuracyGateFailed"
# The step holds: a gate is not yet sure, or the gateway does not carry the weight yet.
REASON_NOT_YET_SURE = "NotYetSure"
REASON_WAITING_FOR_ROUTES = "WaitingForRoutes"
REASON_PROGRESS_DEADLINE = "ProgressDeadlineExceeded"
# Champion/challenger: a new model is scored offline on a frozen set before any traffic.
REASON_CHALLENGE_RUNNING = "OfflineEvaluation"
REASON_CHALLENGE_REFUSED = "OfflineEvaluationRefused"
REASON_CHALLENGE_FAILED = "OfflineEvaluationFailed"
# Retraining waits for the feedback labels it needs.
REASON_RETRAIN_WAITING = "RetrainWaitingForFeedback"


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


class FeedbackAccess(ApiModel):
    """Who may label answers at the gateway's ``POST /feedback``: the labels can roll a
    canary back and become training data, so anonymous feedback is off by default."""

    credentials_secret: DnsName | None = Field(
        default=None,
        description="A Secret in this namespace whose keys name the clients allowed to "
        "send feedback and whose values are their bearer tokens (at least 16 characters; "
        "`Authorization: Bearer <token>`). Mounted into the gateway, which re-reads it, so "
        "a client is added or revoked by editing the Secret.",
    )
    anonymous: bool = Field(
        default=False,
        description="Also take feedback without a credential (rate-limited per client "
        "address). Only for a gateway no untrusted client can reach.",
    )
    labels_per_minute: int = Field(
        default=600, ge=1, le=1000000, description="Labels one client may send per minute."
    )
    bytes_per_hour: int = Field(
        default=16 << 20,
        ge=1024,
        le=1 << 40,
        description="Feedback request bytes one client may send per hour.",
    )


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
    feedback: FeedbackAccess = Field(default_factory=FeedbackAccess)
    resources: Resources = Field(default_factory=Resources)


class RolloutStep(ApiModel):
    weight: int = Field(ge=1, le=100, description="Percent of traffic to the canary.")
    pause_seconds: int = Field(default=60, ge=0, le=86400)


class Analysis(ApiModel):
    """How a canary is judged. Every gate decides pass, fail or not yet sure from an
    interval whose confidence is spent over the looks, so that judging every
    intervalSeconds keeps the chance of rolling back a model as good as stable at or
    below falseRollbackRate."""

    interval_seconds: int = Field(default=30, ge=1, le=3600)
    min_requests: int = Field(
        default=50, ge=0, description="Canary requests before any gate judges."
    )
    false_rollback_rate: float = Field(
        default=0.05,
        gt=0,
        le=0.5,
        description="Chance, over all looks, of rolling back a canary as good as stable.",
    )
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_error_rate_increase: float = Field(
        default=0.005,
        ge=0,
        le=1,
        description="How much the canary's error rate may exceed stable's before it fails.",
    )
    max_latency_p95_ms: float | None = Field(default=None, gt=0)
    max_latency_ratio: float = Field(default=1.5, ge=1, le=100, description="Canary/stable p95.")
    max_prediction_divergence: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Jensen-Shannon distance of label distributions. Always reported; gates "
        "only when set (a retrained model is meant to answer shifted traffic differently).",
    )
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    min_feedback_accuracy: float | None = Field(default=None, ge=0, le=1)
    min_feedback: int = Field(
        default=20, ge=1, description="Feedback labels needed before a feedback gate judges."
    )
    paired: bool = Field(
        default=True,
        description="The gateway asks stable too for each canary-served request, so "
        "feedback scores both models on the same texts (paired accuracy).",
    )
    max_accuracy_drop: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Paired feedback: how much less accurate than stable the canary may be "
        "(smaller bounds need many more labels to be sure of: at 10% disagreement 0.05 takes "
        "about 500, 0.02 about 3,000).",
    )
    paired_gate: Literal["retrained", "always", "off"] = Field(
        default="retrained",
        description="When paired feedback accuracy gates: for canaries a retraining "
        "produced (the loop collects feedback by design), for every canary, or never "
        "(then it is only reported).",
    )
    offline_evaluation: bool = Field(
        default=True,
        description="Score a new model against stable on frozen sets (stable's test split, "
        "held-back feedback) before it gets any traffic.",
    )
    max_offline_drop: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Offline evaluation: how much worse than stable a new model may score on "
        "stable's test split.",
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
    shadow: bool = Field(
        default=False,
        description="Before any user traffic moves, mirror requests to the new model and "
        "judge its answers against stable's on the same requests (agreement, paired "
        "accuracy, errors, latency) for shadowSeconds.",
    )
    shadow_seconds: int = Field(
        default=60, ge=0, le=86400, description="How long the shadow phase lasts at least."
    )
    sticky: Literal["none", "header", "cookie"] = Field(
        default="none",
        description="none: each request drawn by weight; header: by the x-bertops-key "
        "header when sent; cookie: pinned by a cookie (a client that keeps cookies stays "
        "on one variant).",
    )
    progress_deadline_seconds: int | None = Field(
        default=900,
        ge=10,
        le=7 * 86400,
        description="A step that cannot end within this (no traffic, gates not yet sure) "
        "is reported ProgressDeadlineExceeded; unset waits for ever.",
    )
    abort_on_deadline: bool = Field(
        default=False, description="Roll the canary back when its step passes the deadline."
    )


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
    min_feedback_rows: int = Field(
        default=200,
        ge=0,
        le=1000000,
        description="New feedback labels to wait for after drift before retraining starts.",
    )
    max_wait_seconds: int = Field(
        default=3600,
        ge=0,
        le=30 * 86400,
        description="Longest wait for minFeedbackRows; then retraining starts with what exists.",
    )
    holdout_fraction: float = Field(
        default=0.2,
        ge=0,
        le=0.5,
        description="Newest share of the feedback held back from training: the frozen set "
        "a retrained model must beat stable on before it gets traffic.",
    )
    share_with_family: bool = Field(
        default=False,
        description="Let other deployments selecting the family roll this deployment's "
        "retrained models out too (default: only this deployment selects them).",
    )
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


class BertDeployment(ApiModel):
    model_config = {"extra": "ignore"}

    api_version: str = API_VERSION
    kind: Literal["BertDeployment"] = "BertDeployment"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: BertDeploymentSpec
    status: BertDeploymentStatus = Field(default_factory=BertDeploymentStatus)


# The status types live in deployment_status; this module is the kind's one import.
__all__ = [
    "Analysis",
    "AnalysisStatus",
    "Autoscaling",
    "BertDeployment",
    "BertDeploymentSpec",
    "BertDeploymentStatus",
    "ChallengeScore",
    "ChallengeStatus",
    "DriftPolicy",
    "DriftStatus",
    "GateStatus",
    "GitRecord",
    "ModelChoice",
    "ModelSelector",
    "RetrainPolicy",
    "RetrainRecord",
    "RetrainStatus",
    "RetrainWait",
    "Rollout",
    "RolloutRecord",
    "RolloutStep",
    "Serving",
]
