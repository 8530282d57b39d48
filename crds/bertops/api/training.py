"""BertTraining: one fine-tuning run (dataset, base model, task, hyper-parameters,
replicas). The operator waits for the dataset, runs a ``train`` step (one process or N
torch.distributed ranks) and on success creates an owned BertModel. A run with a
``trigger`` was started by a BertDeployment's retraining: its model carries
:data:`RETRAINED_LABEL`, so only that deployment selects it unless ``shareWithFamily``.

Defaults are the usual BERT fine-tuning ones: dropout 0.1, learning rate 5e-5 (1e-6..1e-3),
batch 16, 3 epochs, linear warmup then decay.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from bertops.api import reasons
from bertops.api.meta import (
    API_VERSION,
    ApiModel,
    DnsName,
    LocalObjectReference,
    Resources,
    StatusBase,
    StatusModel,
)
from bertops.api.sources import ModelSource

SUCCEEDED = "Succeeded"
PROGRESSING = "Progressing"
REASON_WAITING_FOR_DATASET = "WaitingForDataset"
REASON_DATASET_NOT_FOUND = reasons.REASON_DATASET_NOT_FOUND
REASON_TRAINING = "Training"
REASON_COMPLETED = "Completed"
REASON_STEP_FAILED = reasons.REASON_STEP_FAILED
REASON_INVALID_SPEC = reasons.REASON_INVALID_SPEC
REASON_UNSUPPORTED_TASK = reasons.REASON_UNSUPPORTED_TASK
REASON_NAME_CONFLICT = "NameConflict"
# On the BertModel a drift-triggered run registers (and on the objects the retraining
# creates): the deployment it was retrained for, which alone selects it unless shared.
RETRAINED_LABEL = "bertops.io/retrained-for"
SHARED_WITH_FAMILY_LABEL = "bertops.io/shared-with-family"

Task = Literal["sequenceClassification", "tokenClassification"]
# tokenClassification is in the schema so manifests written for it stay valid; until its
# steps exist the operator refuses it up front (UnsupportedTask) instead of failing a step.
SUPPORTED_TASKS: tuple[str, ...] = ("sequenceClassification",)


class Hyperparameters(ApiModel):
    learning_rate: float = Field(default=5e-5, ge=1e-6, le=1e-3)
    batch_size: int = Field(default=16, ge=1, le=1024, description="Global batch size.")
    epochs: int = Field(default=3, ge=1, le=100)
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many steps.")
    warmup_ratio: float = Field(default=0.1, ge=0, le=0.5)
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    weight_decay: float = Field(default=0.01, ge=0, le=1)
    max_grad_norm: float = Field(default=1.0, gt=0, le=100)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    early_stopping_patience: int = Field(
        default=2, ge=0, le=100, description="Epochs without improvement before stopping; 0 = off."
    )
    early_stopping_metric: Literal["macroF1", "accuracy", "loss"] = "macroF1"
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        default="auto", description="auto: bf16/fp16 on a GPU that supports it, fp32 on CPU."
    )
    seed: int = Field(default=42, ge=0)


class ModelTemplate(ApiModel):
    """The BertModel a successful run registers."""

    name: DnsName | None = Field(default=None, description="Default: the training's name.")
    family: DnsName | None = Field(
        default=None, description="Model family for deployment selection policies."
    )


class RetrainTrigger(ApiModel):
    """Why the operator started this run (set on runs it creates after drift)."""

    reason: str
    deployment: str | None = None
    drift_score: float | None = None
    report_uri: str | None = None
    time: datetime | None = None
    share_with_family: bool = Field(
        default=False,
        description="Other deployments selecting the model's family may select it too "
        "(default: only the deployment it was retrained for).",
    )


class BertTrainingSpec(ApiModel):
    dataset_ref: LocalObjectReference = Field(description="The BertDataset to train on.")
    base_model: ModelSource
    task: Task = "sequenceClassification"
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    replicas: int = Field(
        default=1, ge=1, le=64, description="torch.distributed world size (pods or processes)."
    )
    resources: Resources = Field(default_factory=Resources)
    engine: Literal["native", "argo"] = Field(
        default="native", description="argo: run the pipeline as an Argo Workflow."
    )
    model: ModelTemplate = Field(default_factory=ModelTemplate)
    output_uri: str | None = Field(default=None, description="Default: the operator's store.")
    trigger: RetrainTrigger | None = None


class TrainingProgress(StatusModel):
    epoch: int = 0
    total_epochs: int = 0
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    samples_per_second: float | None = None
    eta_seconds: float | None = None
    display: str | None = Field(default=None, description="e.g. 2/3 for the printer column.")


class ClassificationMetrics(StatusModel):
    loss: float | None = None
    accuracy: float | None = None
    macro_f1: float | None = None
    precision: float | None = None
    recall: float | None = None


class BertTrainingStatus(StatusBase):
    progress: TrainingProgress | None = None
    validation_metrics: ClassificationMetrics | None = None
    test_metrics: ClassificationMetrics | None = None
    model_name: str | None = None
    artifact_uri: str | None = None
    dataset_checksum: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    attempts: int | None = Field(
        default=None,
        ge=1,
        description="Step attempts started for observedGeneration (exit codes 1 and 3 are "
        "retried with backoff, up to the operator's limit).",
    )
    step: str | None = None


class BertTraining(ApiModel):
    model_config = {"extra": "ignore"}

    api_version: str = API_VERSION
    kind: Literal["BertTraining"] = "BertTraining"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: BertTrainingSpec
    status: BertTrainingStatus = Field(default_factory=BertTrainingStatus)
