"""bertops.trainer.compress: the ``compress`` step. A BertModel's compression recipe
(magnitude or attention-head pruning, distillation, ONNX export, INT8 quantization,
composable in order) applied to a parent model artifact, measured, gated on quality and
written as a new model artifact linked to its parent.

Entry point: :func:`run_compress`, dispatched by :mod:`bertops.trainer.steps` for
``kind: compress`` (CLI ``bertops trainer compress --spec FILE``). Modules: ``recipe``
(validation before work), ``prune``, ``distill``, ``finetune``, ``onnx_export``,
``quantize``, ``tuning`` (the onnxruntime path's measured knobs), ``measure``, ``gate``,
``artifact`` (loading variants), ``pipeline`` (the driver), ``methods`` (running the
recipe), ``finish`` (scoring, gating, timing) and ``publish`` (writing the artifact).
torch is imported only when a step runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bertops.api.steps import CompressStep, StepResult
    from bertops.trainer.compress.tuning import OnnxTuning
    from bertops.trainer.progress import Progress

__all__ = ["run_compress"]


def run_compress(
    step: CompressStep, progress: Progress, *, tuning: OnnxTuning | None = None
) -> StepResult:
    """Run a compress step. A failed quality gate is a returned result (exit code 2,
    reason QualityGateFailed, no artifact); bad input raises BadInputError before any
    heavy work. ``tuning``: the onnxruntime path's knobs (:mod:`.tuning`; the measured
    defaults when None)."""
    from bertops.trainer.compress.pipeline import run_compress as _run

    return _run(step, progress, tuning=tuning)
