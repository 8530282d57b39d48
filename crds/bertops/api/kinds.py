"""The registry of bertops kinds: names, short names, printer columns and the pydantic
types of their spec and status.

Read by the CRD generator (:mod:`bertops.api.crdgen`), by the operator (which kinds to
watch, with which plural) and by the CLI. Adding a kind means adding one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from bertops.api.dataset import BertDatasetSpec, BertDatasetStatus
from bertops.api.deployment import BertDeploymentSpec, BertDeploymentStatus
from bertops.api.meta import API_VERSION, GROUP, VERSION
from bertops.api.model import BertModelSpec, BertModelStatus
from bertops.api.training import BertTrainingSpec, BertTrainingStatus

CATEGORY = "bertops"
# GROUP, VERSION and API_VERSION live in bertops.api.meta (the kind modules import them
# from there); this registry is where everyone else reads them.
__all__ = [
    "API_VERSION",
    "CATEGORY",
    "GROUP",
    "KINDS",
    "VERSION",
    "KindInfo",
    "PrinterColumn",
    "kind_info",
]


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def to_crd(self) -> dict[str, object]:
        column: dict[str, object] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
        }
        if self.description:
            column["description"] = self.description
        if self.priority:
            column["priority"] = self.priority
        return column


def _condition(type_: str, field_: str = "status") -> str:
    return f'.status.conditions[?(@.type=="{type_}")].{field_}'


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    description: str
    columns: tuple[PrinterColumn, ...] = field(default_factory=tuple)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


KINDS: tuple[KindInfo, ...] = (
    KindInfo(
        kind="BertDataset",
        plural="bertdatasets",
        short_names=("bds",),
        spec_model=BertDatasetSpec,
        status_model=BertDatasetStatus,
        description="A prepared, versioned text dataset: source, cleaning, tokenizer, split.",
        columns=(
            PrinterColumn("Rows", ".status.rows.total", "integer", "Rows after cleaning"),
            PrinterColumn("Labels", ".status.numLabels", "integer"),
            PrinterColumn("Checksum", ".status.shortChecksum"),
            PrinterColumn("Ready", _condition("Ready")),
            PrinterColumn("Reason", _condition("Ready", "reason")),
            AGE,
            PrinterColumn("Artifact", ".status.artifactUri", priority=1),
        ),
    ),
    KindInfo(
        kind="BertTraining",
        plural="berttrainings",
        short_names=("btr",),
        spec_model=BertTrainingSpec,
        status_model=BertTrainingStatus,
        description="A fine-tuning run that registers a BertModel on success.",
        columns=(
            PrinterColumn("Dataset", ".spec.datasetRef.name"),
            PrinterColumn("Replicas", ".spec.replicas", "integer"),
            PrinterColumn("Epoch", ".status.progress.display"),
            PrinterColumn("Loss", ".status.progress.loss", "number"),
            PrinterColumn("Accuracy", ".status.testMetrics.accuracy", "number"),
            PrinterColumn("Model", ".status.modelName"),
            PrinterColumn("Succeeded", _condition("Succeeded")),
            PrinterColumn("Reason", _condition("Succeeded", "reason")),
            AGE,
        ),
    ),
    KindInfo(
        kind="BertModel",
        plural="bertmodels",
        short_names=("bm",),
        spec_model=BertModelSpec,
        status_model=BertModelStatus,
        description="One immutable model version: weights, metrics, lineage, compression.",
        columns=(
            PrinterColumn("Family", ".spec.family"),
            PrinterColumn("Parent", ".status.lineage.parentModel"),
            PrinterColumn("Format", ".status.format"),
            PrinterColumn("Size", ".status.size.display"),
            PrinterColumn("Accuracy", ".status.metrics.accuracy", "number"),
            PrinterColumn("F1", ".status.metrics.macroF1", "number"),
            PrinterColumn("Ready", _condition("Ready")),
            PrinterColumn("Reason", _condition("Ready", "reason")),
            AGE,
        ),
    ),
    KindInfo(
        kind="BertDeployment",
        plural="bertdeployments",
        short_names=("bdep",),
        spec_model=BertDeploymentSpec,
        status_model=BertDeploymentStatus,
        description="Serving intent: model choice, canary rollout, drift and retraining.",
        columns=(
            PrinterColumn("Stable", ".status.stableModel"),
            PrinterColumn("Canary", ".status.canaryModel"),
            PrinterColumn("Weight", ".status.canaryWeight", "integer"),
            PrinterColumn("Drift", ".status.driftDisplay"),
            PrinterColumn("Ready", _condition("Ready")),
            PrinterColumn("Reason", _condition("Ready", "reason")),
            AGE,
        ),
    ),
)


def kind_info(kind_or_plural: str) -> KindInfo:
    """Look a kind up by kind, plural or short name (case-insensitive)."""
    key = kind_or_plural.lower()
    for info in KINDS:
        if key in (info.kind.lower(), info.plural, *info.short_names):
            return info
    raise KeyError(f"unknown bertops kind {kind_or_plural!r}")
