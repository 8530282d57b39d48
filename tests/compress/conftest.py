"""Fixtures of the compress tests: the trainer tests' tiny prepared tweet dataset and the
tiny BERT trained on it (2 layers, 2 heads, hidden 64; seconds on 1 thread) serve as
parent, plus a helper that builds and runs a compress step on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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
