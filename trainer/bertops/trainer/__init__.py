"""bertops.trainer: the trainer steps (prepare, train, evaluate) behind the step contract
of :mod:`bertops.api.steps`.

Python API::

    from bertops.trainer import run_step
    result = run_step({"kind": "prepare", "name": "...", "dataset": {...}, "outputUri": "..."})

The CLI (``bertops trainer prepare|train|evaluate|run|launch``) is in
:mod:`bertops.trainer.cli`. This module stays light: torch is imported only when a step
runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bertops.api.steps import StepResult, StepSpec
    from bertops.trainer.progress import Progress

__all__ = ["parse_spec", "run_step"]


def run_step(
    spec: str | bytes | dict[str, Any] | StepSpec, progress: Progress | None = None
) -> StepResult:
    """Run a prepare/train/evaluate step; returns its StepResult (never raises for step
    failures: see ``result.succeeded`` and ``result.exit_code``)."""
    from bertops.trainer.steps import run_step as _run_step

    return _run_step(spec, progress)


def parse_spec(data: str | bytes | dict[str, Any]) -> StepSpec:
    from bertops.trainer.steps import parse_spec as _parse_spec

    return _parse_spec(data)
