"""The demo's manifests: the example app with the demo's data path and timings still
parses as the API types (so the API server would take it), the deployment serves
safetensors models (their embeddings feed the drift check) and retrains on drift."""

from __future__ import annotations

from pathlib import Path

from bertops.api.dataset import BertDataset
from bertops.api.deployment import BertDeployment
from bertops.api.model import BertModel
from bertops.api.training import BertTraining
from bertops.cluster.demo import example_manifests

TYPES = {
    "BertDataset": BertDataset,
    "BertTraining": BertTraining,
    "BertModel": BertModel,
    "BertDeployment": BertDeployment,
}


def test_demo_manifests_are_valid_and_sized_for_a_demo(tmp_path: Path) -> None:
    docs = {
        d["kind"]: TYPES[d["kind"]].model_validate(d)
        for d in example_manifests(tmp_path / "x.csv", 2, 2)
    }
    assert isinstance(docs["BertDataset"], BertDataset)
    dataset = docs["BertDataset"].spec
    assert dataset.source.uri == str(tmp_path / "x.csv") and dataset.source.label_column == "label"
    assert not dataset.cleaning.strip_urls and not dataset.cleaning.strip_mentions
    assert isinstance(docs["BertTraining"], BertTraining)
    training = docs["BertTraining"].spec
    assert training.hyperparameters.epochs == 2 and training.replicas == 2
    assert isinstance(docs["BertDeployment"], BertDeployment)
    deployment = docs["BertDeployment"].spec
    assert deployment.model.selector is not None
    assert deployment.model.selector.format == "safetensors"
    assert deployment.retrain.enabled and deployment.retrain.max_retrains == 1
    assert deployment.drift.interval_seconds <= 30 and deployment.drift.window_size >= 50
    assert all(step.pause_seconds <= 30 for step in deployment.rollout.steps)
