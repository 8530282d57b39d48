"""BertDeployment's status types: what the operator reports of serving, the rollout
(gates, offline evaluation, history), drift monitoring and retraining.

Written only by the operator (:mod:`bertops.operator.deployment`); read by kubectl's
printer columns, ``bertops rollout status`` and the UI. Re-exported by
:mod:`bertops.api.deployment`, the one place the CRD is generated from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from bertops.api.meta import StatusBase, StatusModel


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
    outcome: Literal[
        "Running", "Trained", "Failed", "Promoted", "RolledBack", "Refused", "NotSelected"
    ] = "Running"
    message: str | None = None


class RetrainWait(StatusModel):
    """Drift was found; retraining waits for new feedback labels (retrain.minFeedbackRows)."""

    since: datetime
    baseline: float = Field(default=0, description="Feedback labels counted when drift was found.")
    have: float = Field(default=0, description="New feedback labels since then.")
    needed: int
    deadline: datetime
    message: str | None = None


class RetrainStatus(StatusModel):
    count: int = Field(default=0, description="Retrainings started, all time.")
    waiting: RetrainWait | None = None
    last_at: datetime | None = None
    last_training: str | None = None
    active: str | None = Field(default=None, description="The retraining that runs now.")
    history: list[RetrainRecord] | None = Field(default=None, max_length=20)


class ChallengeScore(StatusModel):
    """Both models' accuracy on one frozen evaluation set."""

    set: Literal["testSplit", "heldBackFeedback"]
    rows: int
    stable: float | None = None
    candidate: float | None = None


class ChallengeStatus(StatusModel):
    """Champion/challenger: the new model against stable on frozen sets, before traffic."""

    model: str
    stable: str
    phase: Literal["Running", "Passed", "Refused", "Failed"] = "Running"
    step: str | None = None
    at: datetime | None = None
    scores: list[ChallengeScore] | None = Field(default=None, max_length=4)
    message: str | None = None


class RolloutRecord(StatusModel):
    model: str
    outcome: Literal["Promoted", "RolledBack", "Aborted", "Refused"]
    at: datetime
    message: str | None = None
    scores: list[ChallengeScore] | None = Field(
        default=None, max_length=4, description="The offline evaluation, when there was one."
    )


class GateStatus(StatusModel):
    name: str
    # Inconclusive: what a status written before "NotYetSure" holds (still readable).
    result: Literal["Passed", "Failed", "NotYetSure", "Reported", "Inconclusive"]
    value: float | None = Field(default=None, description="The estimate.")
    lower: float | None = Field(default=None, description="The interval's lower end.")
    upper: float | None = Field(default=None, description="The interval's upper end.")
    confidence: float | None = Field(default=None, description="The interval's level.")
    threshold: float | None = None
    samples: float | None = Field(default=None, description="Requests or labels judged.")
    needed: int | None = Field(default=None, description="About how many more it needs.")
    message: str | None = None


class AnalysisStatus(StatusModel):
    at: datetime
    looks: int = Field(default=0, description="Analyses that saw new data (spend confidence).")
    seen_requests: float | None = Field(
        default=None, description="Canary requests at the last look that counted."
    )
    gates: list[GateStatus] = Field(default_factory=list, max_length=20)


class BertDeploymentStatus(StatusBase):
    stable_model: str | None = None
    canary_model: str | None = None
    canary_weight: int | None = None
    shadowing: bool | None = Field(
        default=None,
        description="The canary gets mirrored requests only (rollout.shadow), before step 1.",
    )
    rollout_step: int | None = None
    step_started_at: datetime | None = None
    endpoint: str | None = None
    metrics_endpoint: str | None = Field(
        default=None,
        description="The gateway's /metrics listener (apart from endpoint: the counters "
        "name the canary). Read by Prometheus, the rollout analysis and `bertops rollout`.",
    )
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
    challenge: ChallengeStatus | None = Field(
        default=None, description="The last offline evaluation of a new model against stable."
    )
    handled_actions: list[str] | None = Field(
        default=None,
        max_length=10,
        description="The last bertops.io/rollout-action values applied, newest last.",
    )
