"""Fixtures and helpers of the compress tests: the trainer tests' tiny prepared tweet
dataset and the tiny BERT trained on it (2 layers, 2 heads, hidden 64; seconds on 1
thread) serve as parent, plus a helper that builds and runs a compress step on them and
the helpers that read its output back (verified manifest, reloaded model, logits), used by
every ``test_*`` module here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from bertops.api.artifacts import MODEL_MANIFEST, ModelManifest, verify_folder

# Re-exported fixtures: the same session-scoped dataset and parent model as the trainer
# tests (pytest registers fixtures imported into a conftest).
from tests.trainer.conftest import (  # noqa: F401
    _torch_threads,
    binary_csv,
    corpus,
    minilm,
    prepared,
    trained,
)


def compress_spec(
    parent: Path,
    dataset: Path,
    output: Path,
    steps: list[dict[str, Any]],
    gate: dict[str, float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    compression: dict[str, Any] = {"parentRef": {"name": "tiny"}, "steps": steps}
    if gate is not None:
        compression["gate"] = gate
    return {
        "kind": "compress",
        "name": extra.pop("name", "cmp-test"),
        "parentUri": str(parent),
        "datasetUri": str(dataset),
        "outputUri": str(output),
        "compression": compression,
        "modelName": "tiny-compressed",
        "measureLatency": extra.pop("measure_latency", False),
        **extra,
    }


# Loose gates: the tiny parent is noisy; tests about the gate set their own.
OPEN_GATE = {"maxAccuracyDrop": 1.0, "maxF1Drop": 1.0}


@pytest.fixture
def compress(
    trained: tuple[Path, Any],  # noqa: F811 (fixtures)
    prepared: Path,  # noqa: F811 (fixtures)
    tmp_path: Path,
) -> Any:
    """Run a compress step on the tiny parent: ``compress(steps, gate=..., output=...,
    tuning=...)`` returns (StepResult, output folder); ``tuning`` is the in-process
    :class:`~bertops.trainer.compress.tuning.OnnxTuning` (defaults when omitted)."""
    from bertops.api.steps import CompressStep
    from bertops.trainer.compress import run_compress
    from bertops.trainer.progress import Progress

    parent, _ = trained

    def run(
        steps: list[dict[str, Any]],
        gate: dict[str, float] | None = None,
        tuning: Any = None,
        **extra: Any,
    ) -> tuple[Any, Path]:
        output = tmp_path / extra.pop("output", "variant")
        spec = CompressStep.model_validate(
            compress_spec(parent, prepared, output, steps, gate or OPEN_GATE, **extra)
        )
        return run_compress(spec, Progress(bar=False), tuning=tuning), output

    return run


def manifest_of(folder: Path) -> ModelManifest:
    manifest = ModelManifest.model_validate_json((folder / MODEL_MANIFEST).read_text())
    assert verify_folder(folder, manifest.files) == []
    return manifest


def _logits(model: Any, prepared: Path) -> torch.Tensor:  # noqa: F811 (not the fixture)
    from bertops.trainer import prepare
    from bertops.trainer.evaluate import collate

    rows = [list(map(int, r)) for r in prepare.read_split(prepared, "test")["input_ids"]][:32]
    batch = collate(rows, 0, torch.device("cpu"))
    with torch.no_grad():
        return torch.as_tensor(model(**batch).logits).float()


def _load(folder: Path) -> Any:
    from bertops.trainer.compress import artifact

    return artifact.load_any(folder, manifest_of(folder))


def _parent(trained: tuple[Path, Any]) -> Any:  # noqa: F811 (not the fixture)
    return _load(trained[0])
