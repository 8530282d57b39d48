"""Step contracts: what a step process (``bertops trainer
prepare|train|evaluate|compress|challenge``, and the drift monitor's ``reference|drift``)
reads and the result document it writes.

The operator builds a step spec from a resource's spec, hands it to a runtime (a local
process or a Kubernetes Job) as JSON, and reads the :class:`StepResult` back (a result
file, or the container's termination message). Exit codes tell a runtime whether to
retry: see :class:`ExitCode`.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import IntEnum
from typing import Any, Literal

from pydantic import Field, model_validator

from bertops.api.dataset import BertDatasetSpec
from bertops.api.meta import ApiModel
from bertops.api.model import Compression, QualityGate
from bertops.api.results import (
    ChallengeDetails,
    ChallengeSet,
    CompressDetails,
    DriftDetails,
    EvaluateDetails,
    PrepareDetails,
    ReferenceDetails,
    StepDetails,
    TrainDetails,
)
from bertops.api.training import BertTrainingSpec

RESULT_FILE = "result.json"
TERMINATION_MESSAGE_LIMIT = 4000  # bytes; the kubelet keeps at most 4096


class ExitCode(IntEnum):
    OK = 0
    UNEXPECTED = 1  # a bug: retried a few times, then reported
    BAD_INPUT = 2  # permanent: retrying cannot help (bad data, bad spec, missing file)
    TRANSIENT = 3  # retry: storage hiccup, peer rank lost, out of memory on a shared node


class StepBase(ApiModel):
    name: str = Field(min_length=1, description="Run id, unique per object and generation.")
    result_uri: str | None = Field(
        default=None, description="Where to write the result document (default: stdout only)."
    )


class PrepareStep(StepBase):
    kind: Literal["prepare"] = "prepare"
    dataset: BertDatasetSpec
    output_uri: str = Field(description="Folder (fsspec URI) for the prepared dataset artifact.")


class TrainStep(StepBase):
    kind: Literal["train"] = "train"
    training: BertTrainingSpec
    dataset_uri: str = Field(description="The prepared dataset artifact folder.")
    output_uri: str = Field(description="Folder for the model artifact.")
    checkpoint_uri: str | None = Field(
        default=None, description="Folder for per-epoch checkpoints (default: output + .ckpt)."
    )
    model_name: str | None = Field(default=None, description="Name recorded in the manifest.")


class EvaluateStep(StepBase):
    kind: Literal["evaluate"] = "evaluate"
    model_uri: str
    dataset_uri: str
    split: Literal["train", "validation", "test"] = "test"
    batch_size: int = Field(default=64, ge=1)


class CompressStep(StepBase):
    kind: Literal["compress"] = "compress"
    parent_uri: str
    dataset_uri: str
    output_uri: str
    compression: Compression
    model_name: str | None = None
    measure_latency: bool = True


class ReferenceStep(StepBase):
    """Run a model over a sample of its dataset's split and keep, per row, what the drift
    monitor compares production traffic with: the model's sentence embedding, the text
    descriptors and the prediction (the prediction log's line format)."""

    kind: Literal["reference"] = "reference"
    model_uri: str = Field(description="The model artifact folder (verified before loading).")
    dataset_uri: str = Field(description="The prepared dataset artifact folder.")
    split: Literal["train", "validation", "test"] = "validation"
    size: int = Field(default=2000, ge=1, le=100000, description="Rows sampled at most.")
    seed: int = Field(default=0, ge=0)
    output_uri: str = Field(description="Folder for reference.jsonl and its manifest.")
    model_name: str | None = Field(default=None, description="Recorded in each row.")


class DriftStep(StepBase):
    """Compare the newest logged predictions of one model with its reference (Evidently):
    embedding drift, text-descriptor drift and prediction (label) drift."""

    kind: Literal["drift"] = "drift"
    reference_uri: str = Field(description="Folder written by a reference step.")
    predictions_uri: str = Field(
        description="Folder of prediction logs (*.jsonl and their rotated *.jsonl.N files)."
    )
    model_name: str | None = Field(
        default=None, description="Only rows served by this model count (default: all)."
    )
    window_size: int = Field(default=1000, ge=1, le=100000)
    min_rows: int = Field(
        default=50, ge=1, description="Fewer rows in the window: 'not enough data', no score."
    )
    threshold: float = Field(default=0.3, ge=0, le=1)
    method: Literal["model", "mmd", "ratio", "distance"] = "model"
    output_uri: str = Field(description="Folder for report.html and report.json.")


class ChallengeStep(StepBase):
    """Champion/challenger before any traffic moves: score the stable model and a
    candidate on the same frozen rows, the stable model's test split and the feedback
    held back from the candidate's dataset, and report them row by row."""

    kind: Literal["challenge"] = "challenge"
    stable_model_uri: str = Field(description="The stable model artifact folder.")
    candidate_model_uri: str = Field(description="The candidate model artifact folder.")
    test_uri: str = Field(
        description="A prepared dataset artifact folder (the stable model's): its test split "
        "is the first set."
    )
    holdout_uri: str | None = Field(
        default=None,
        description="A prepared dataset's holdout file (held-back feedback), the second set; "
        "unset: that set has 0 rows.",
    )
    output_uri: str = Field(description="Folder for report.json.")
    max_rows: int = Field(
        default=2000, ge=1, le=100000, description="Rows per set at most (a seeded sample)."
    )
    seed: int = Field(default=0, ge=0, description="Seed of the sample when a set is larger.")
    batch_size: int = Field(default=64, ge=1)


StepSpec = (
    PrepareStep
    | TrainStep
    | EvaluateStep
    | CompressStep
    | ReferenceStep
    | DriftStep
    | ChallengeStep
)
STEP_KINDS = ("prepare", "train", "evaluate", "compress", "reference", "drift", "challenge")


class StepResult(ApiModel):
    """The small document every step writes last (also its termination message)."""

    model_config = {"extra": "ignore"}

    kind: Literal["prepare", "train", "evaluate", "compress", "reference", "drift", "challenge"]
    name: str
    succeeded: bool
    exit_code: int = 0
    reason: str = Field(default="Succeeded", description="CamelCase reason for the condition.")
    message: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    artifacts: dict[str, str] = Field(default_factory=dict, description="role -> URI")
    checksums: dict[str, str] = Field(default_factory=dict, description="role -> sha256")
    details: StepDetails | None = Field(
        default=None, description="Step-specific facts, typed per kind (bertops.api.results)."
    )

    @model_validator(mode="before")
    @classmethod
    def _details_kind(cls, data: Any) -> Any:
        # The details' discriminator is the result's kind: a document that leaves it out
        # (an older step, a hand-written test result) still parses as the right model.
        if isinstance(data, dict) and isinstance(data.get("details"), dict):
            details = data["details"]
            if "kind" not in details and data.get("kind"):
                data = {**data, "details": {**details, "kind": data["kind"]}}
        return data

    @model_validator(mode="after")
    def _same_kind(self) -> StepResult:
        if self.details is not None and self.details.kind != self.kind:
            raise ValueError(f"details of kind {self.details.kind} in a {self.kind} result")
        return self

    def compact_json(self, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
        """The result as JSON of at most ``limit`` bytes, for a container's termination
        message (Kubernetes keeps 4 KiB): the largest ``details`` entries go first (those
        the operator reads last), then the message is shortened; the full document stays
        in the result file."""
        doc = self.model_dump(mode="json", by_alias=True, exclude_none=True)

        def encoded() -> str:
            return json.dumps(doc, separators=(",", ":"))

        details: dict[str, Any] = doc.get("details", {})
        essential = type(self.details).ESSENTIAL if self.details is not None else frozenset()
        by_size = sorted(
            (key for key in details if key != "kind"),
            key=lambda key: (key in essential, -len(json.dumps(details[key]))),
        )
        for key in by_size:
            if len(encoded().encode()) <= limit:
                break
            del details[key]
        while len(encoded().encode()) > limit and len(doc.get("message", "")) > 80:
            doc["message"] = doc["message"][: len(doc["message"]) // 2] + "…"
        return encoded()


class ProgressEvent(ApiModel):
    """One JSON line a step prints on stdout while it works."""

    model_config = {"extra": "allow"}

    event: Literal["start", "progress", "epoch", "checkpoint", "done", "error"] = "progress"
    epoch: int | None = None
    total_epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    samples_per_second: float | None = None
    eta_seconds: float | None = None
    message: str | None = None


__all__ = [
    "RESULT_FILE",
    "STEP_KINDS",
    "ChallengeDetails",
    "ChallengeSet",
    "ChallengeStep",
    "CompressDetails",
    "CompressStep",
    "DriftDetails",
    "DriftStep",
    "EvaluateDetails",
    "EvaluateStep",
    "ExitCode",
    "PrepareDetails",
    "PrepareStep",
    "ProgressEvent",
    "QualityGate",
    "ReferenceDetails",
    "ReferenceStep",
    "StepResult",
    "StepSpec",
    "TrainDetails",
    "TrainStep",
]
