"""Typed step-specific facts of a step result: one model per step kind, a discriminated
union on ``kind``, carried in :attr:`bertops.api.steps.StepResult.details`.

Built by the trainer steps (``prepare``, ``train``, ``evaluate``, ``compress``,
``challenge``) and the drift monitor's (``reference``, ``drift``), and read by
the operator's planners, which copy named fields into status instead of merging a
free-form dict.

Unknown keys are kept and reported, not refused: the trainer image and the operator are
deployed separately, so during an upgrade a newer trainer may add a field, and refusing
the whole result would fail a finished (possibly hours long) step. The keys survive in
the result document, :attr:`ResultDetails.unknown_keys` names them and the planners post
a Warning Event, so nothing vanishes silently. Every field but ``kind`` is optional so a
result shortened for a termination message (see ``StepResult.compact_json``) still parses.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from bertops.api.meta import ApiModel

Summary = dict[str, float]
"""ClassificationMetrics fields (loss, accuracy, macroF1, precision, recall)."""


class ResultDetails(ApiModel):
    """Base of the per-kind details; ``ESSENTIAL`` fields are the ones the operator reads,
    kept longest when a result must be shortened."""

    model_config = ConfigDict(extra="allow")
    ESSENTIAL: ClassVar[frozenset[str]] = frozenset()

    @property
    def unknown_keys(self) -> list[str]:
        """Keys this operator version does not know (written by a newer step)."""
        return sorted(self.model_extra or {})


class PrepareDetails(ResultDetails):
    ESSENTIAL = frozenset({"artifactUri", "checksum", "rows", "labels", "numLabels"})

    kind: Literal["prepare"] = "prepare"
    artifact_uri: str | None = None
    checksum: str | None = None
    short_checksum: str | None = None
    rows: dict[str, int] | None = Field(default=None, description="train/validation/test/total")
    labels: list[str] | None = None
    num_labels: int | None = None
    label_counts: dict[str, int] | None = None
    dropped_rows: dict[str, int] | None = Field(default=None, description="Rows, by reason.")
    token_length_p50: float | None = None
    token_length_p95: float | None = None
    unknown_token_rate: float | None = None
    invalid_byte_sequences: int | None = None
    source_rows: dict[str, int] | None = Field(
        default=None,
        description="Rows read per source before cleaning: source, additionalSources[i].",
    )
    holdout_uri: str | None = Field(
        default=None, description="The holdout file; unset when no source has a holdout."
    )
    holdout_rows: int | None = Field(
        default=None, description="Rows held out of every split (newest by time)."
    )


class TrainDetails(ResultDetails):
    ESSENTIAL = frozenset(
        {"artifactUri", "modelName", "datasetChecksum", "validationMetrics", "testMetrics"}
        | {"epochsRun"}
    )

    kind: Literal["train"] = "train"
    artifact_uri: str | None = None
    model_name: str | None = None
    dataset_checksum: str | None = None
    validation_metrics: Summary | None = None
    test_metrics: Summary | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    early_stopped: bool | None = None
    resumed_from_epoch: int | None = None
    majority_baseline_accuracy: float | None = None
    world_size: int | None = None
    rank_weight_digests: list[str] | None = None
    history: list[dict[str, Any]] | None = Field(default=None, description="One entry per epoch.")
    device: str | None = None
    mixed_precision: str | None = None
    train_seconds: float | None = None
    train_cpu_seconds: float | None = None
    train_samples: int | None = None
    reused: bool | None = Field(default=None, description="An earlier run's artifact was reused.")


class EvaluateDetails(ResultDetails):
    ESSENTIAL = frozenset({"metrics", "modelName"})

    kind: Literal["evaluate"] = "evaluate"
    split: str | None = None
    rows: int | None = None
    metrics: dict[str, Any] | None = Field(
        default=None, description="Summary plus per-class report and confusion matrix."
    )
    model_name: str | None = None
    retokenized: bool | None = None
    labels: list[str] | None = None


class CompressDetails(ResultDetails):
    ESSENTIAL = frozenset({"qualityDelta", "testMetrics", "modelName", "format"})

    kind: Literal["compress"] = "compress"
    quality_delta: dict[str, float] | None = Field(default=None, description="variant - parent")
    test_metrics: Summary | None = None
    parent_test_metrics: Summary | None = None
    recipe: list[str] | None = None
    parameters: int | None = None
    parent_parameters: int | None = None
    format: str | None = None
    steps: list[dict[str, Any]] | None = Field(default=None, description="Per operation facts.")
    parent_model: str | None = None
    latency: dict[str, Any] | None = None
    bytes_on_disk: int | None = None
    size_ratio: float | None = None
    quantization: dict[str, Any] | None = None
    model_name: str | None = None


class ReferenceDetails(ResultDetails):
    ESSENTIAL = frozenset({"artifactUri", "rows", "modelName"})

    kind: Literal["reference"] = "reference"
    artifact_uri: str | None = None
    rows: int | None = None
    split: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    embedding_dim: int | None = Field(default=None, description="0: the model gives none.")
    label_counts: dict[str, int] | None = None


class DriftSignal(ApiModel):
    """One compared column: the embeddings, a text descriptor or the predicted label."""

    model_config = ConfigDict(extra="allow")

    name: str
    method: str | None = None
    value: float | None = Field(default=None, description="The test's statistic or p-value.")
    threshold: float | None = None
    drifted: bool | None = None


class DriftDetails(ResultDetails):
    """``enoughData: false``: the window held fewer than ``minRows`` rows; no score."""

    ESSENTIAL = frozenset(
        {"score", "drifted", "enoughData", "windowRows", "reportUri", "threshold"}
    )

    kind: Literal["drift"] = "drift"
    enough_data: bool | None = None
    score: float | None = Field(default=None, description="Share of drifted signals, 0..1.")
    drifted: bool | None = None
    threshold: float | None = None
    method: str | None = None
    window_rows: int | None = None
    reference_rows: int | None = None
    skipped_rows: int | None = Field(default=None, description="Unreadable log lines skipped.")
    signals: list[DriftSignal] | None = None
    report_uri: str | None = Field(default=None, description="The HTML report.")
    report_json_uri: str | None = None
    check_seconds: float | None = None
    model_name: str | None = None


class ChallengeSet(ApiModel):
    """One frozen set scored by both models of a challenge, row by row. ``rows`` 0: the
    set was empty (no accuracies)."""

    model_config = ConfigDict(extra="allow")

    set: Literal["testSplit", "heldBackFeedback"]
    rows: int = 0
    available_rows: int | None = Field(
        default=None, description="Rows in the set before sampling down to maxRows."
    )
    stable_accuracy: float | None = None
    candidate_accuracy: float | None = None
    both_correct: int = 0
    candidate_only: int = Field(default=0, description="Rows only the candidate got right.")
    stable_only: int = Field(default=0, description="Rows only the stable model got right.")
    both_wrong: int = 0


class ChallengeDetails(ResultDetails):
    """Champion (stable) against challenger (candidate) on the same frozen rows."""

    ESSENTIAL = frozenset({"sets", "reportUri", "stableModel", "candidateModel"})

    kind: Literal["challenge"] = "challenge"
    sets: list[ChallengeSet] | None = None
    stable_model: str | None = Field(default=None, description="The stable model's name.")
    candidate_model: str | None = Field(default=None, description="The candidate's name.")
    report_uri: str | None = Field(default=None, description="The JSON report.")


StepDetails = Annotated[
    PrepareDetails
    | TrainDetails
    | EvaluateDetails
    | CompressDetails
    | ReferenceDetails
    | DriftDetails
    | ChallengeDetails,
    Field(discriminator="kind"),
]

__all__ = [
    "ChallengeDetails",
    "ChallengeSet",
    "CompressDetails",
    "DriftDetails",
    "DriftSignal",
    "EvaluateDetails",
    "PrepareDetails",
    "ReferenceDetails",
    "ResultDetails",
    "StepDetails",
    "TrainDetails",
]
