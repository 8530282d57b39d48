"""Running a compression recipe: the :class:`Variant` (the model as the recipe transforms
it), the :class:`Rows` of a split it trains and ranks heads on, and :func:`apply`, which
runs one planned operation (magnitude or attention-head pruning, distillation, ONNX
export, INT8 quantization) on the variant and says what it did.

Called by :mod:`bertops.trainer.compress.pipeline` once per operation, in recipe order;
the variant it leaves is scored, gated and written by
:mod:`bertops.trainer.compress.finish`. The methods themselves live in ``prune``,
``distill``, ``finetune``, ``onnx_export`` and ``quantize``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bertops.api.artifacts import LoadStep
from bertops.modelio.heads import PRUNE_HEADS_OP, prune_heads
from bertops.modelio.recipe import torch_dynamic, torch_load_step
from bertops.trainer.compress import (
    artifact,
    distill,
    finetune,
    onnx_export,
    prune,
    quantize,
    recipe,
)
from bertops.trainer.compress.tuning import OnnxTuning
from bertops.trainer.evaluate import collate
from bertops.trainer.progress import Progress

IMPORTANCE_ROWS = 512  # validation rows that rank attention heads (enough to be stable)


class Rows:
    """Token ids and model-space labels of one split."""

    def __init__(self, ids: list[list[int]], labels: list[int]) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)


class Variant:
    """The model as the recipe transforms it."""

    def __init__(self, model: Any, load_recipe: list[LoadStep]) -> None:
        self.model = model  # FP32 torch model (what a safetensors artifact stores)
        self.quantized: Any = None  # torch dynamic-INT8 copy (measured, not stored)
        self.onnx: Path | None = None
        self.onnx_raw: Path | None = None  # the plain export (before offline fusion)
        self.load_recipe = load_recipe
        self.details: list[dict[str, Any]] = []
        self.quantization: dict[str, Any] = {}
        self.export: dict[str, Any] = {}

    def runnable(self) -> Any:
        if self.onnx is not None:
            return artifact.OnnxClassifierModule(self.onnx)
        return self.quantized if self.quantized is not None else self.model


def apply(
    op: recipe.Operation,
    variant: Variant,
    rows: dict[str, Rows],
    pad_id: int,
    hp: dict[str, str] | None,
    scratch: Path,
    progress: Progress,
    tuning: OnnxTuning,
) -> dict[str, Any]:
    """Run ``op`` on ``variant`` (in place); returns the step's details for the result."""
    info: dict[str, Any] = {}
    if op.method == "magnitudePrune":
        info = _magnitude_prune(op, variant, rows, pad_id, hp, progress)
    elif op.method == "headPrune":
        info = _head_prune(op, variant, rows, pad_id, hp, progress)
    elif op.method == "distill":
        info = _distill(op, variant, rows, pad_id, hp, progress)
    elif op.method == "onnxExport":
        info = _onnx_export(variant, rows, pad_id, scratch, tuning)
    elif op.method == "quantize":
        info = _quantize(op, variant, scratch, tuning)
    return info


def _magnitude_prune(
    op: recipe.Operation,
    variant: Variant,
    rows: dict[str, Rows],
    pad_id: int,
    hp: dict[str, str] | None,
    progress: Progress,
) -> dict[str, Any]:
    step = op.step
    model = variant.model
    info: dict[str, Any] = {}
    assert step.sparsity is not None and step.scope is not None
    masks = prune.magnitude_prune(model, step.sparsity, step.scope)
    if step.fine_tune_epochs:
        info["fineTune"] = finetune.train(
            model,
            rows["train"].ids,
            rows["train"].labels,
            finetune.TuneSettings.from_hyperparameters(step.fine_tune_epochs, hp),
            pad_id=pad_id,
            progress=progress,
            what=op.label,
            after_step=lambda: prune.apply_masks(model, masks),
        )
    info["sparsity"] = round(prune.encoder_sparsity(model), 6)
    return info


def _head_prune(
    op: recipe.Operation,
    variant: Variant,
    rows: dict[str, Rows],
    pad_id: int,
    hp: dict[str, str] | None,
    progress: Progress,
) -> dict[str, Any]:
    step = op.step
    model = variant.model
    info: dict[str, Any] = {}
    assert step.heads_to_prune is not None
    source = rows["validation"] if len(rows["validation"]) else rows["train"]
    count = min(len(source), IMPORTANCE_ROWS)
    batches = [
        (
            collate(source.ids[i : i + 32], pad_id, torch.device("cpu")),
            torch.as_tensor(source.labels[i : i + 32]),
        )
        for i in range(0, count, 32)
    ]
    importance = prune.head_importance(model, batches)
    heads = prune.choose_heads(importance, step.heads_to_prune, prune.heads_per_layer(model))
    prune_heads(model, heads)
    if step.fine_tune_epochs:
        info["fineTune"] = finetune.train(
            model,
            rows["train"].ids,
            rows["train"].labels,
            finetune.TuneSettings.from_hyperparameters(step.fine_tune_epochs, hp),
            pad_id=pad_id,
            progress=progress,
            what=op.label,
        )
    variant.load_recipe = [s for s in variant.load_recipe if s.op != PRUNE_HEADS_OP]
    variant.load_recipe.insert(
        0, LoadStep(op=PRUNE_HEADS_OP, params={"heads": model.config.pruned_heads})
    )
    info.update(
        removedHeads={str(k): v for k, v in heads.items()},
        headsPerLayer=prune.heads_per_layer(model),
        importanceRows=count,
    )
    return info


def _distill(
    op: recipe.Operation,
    variant: Variant,
    rows: dict[str, Rows],
    pad_id: int,
    hp: dict[str, str] | None,
    progress: Progress,
) -> dict[str, Any]:
    step = op.step
    model = variant.model
    info: dict[str, Any] = {}
    assert step.student_layers is not None and step.temperature is not None
    assert step.alpha is not None
    soft = distill.teacher_logits(model, rows["train"].ids, pad_id)
    student = distill.make_student(model, step.student_layers)
    info["teacherLayers"] = distill.student_layer_ids(
        model.config.num_hidden_layers, step.student_layers
    )
    info["training"] = finetune.train(
        student,
        rows["train"].ids,
        rows["train"].labels,
        finetune.TuneSettings.from_hyperparameters(step.fine_tune_epochs, hp),
        pad_id=pad_id,
        progress=progress,
        what=op.label,
        teacher_logits=soft,
        temperature=step.temperature,
        alpha=step.alpha,
    )
    variant.model = student
    return info


def _onnx_export(
    variant: Variant, rows: dict[str, Rows], pad_id: int, scratch: Path, tuning: OnnxTuning
) -> dict[str, Any]:
    sample_rows = (rows["validation"] if len(rows["validation"]) else rows["train"]).ids[:8]
    sample = collate(sample_rows or [[0, 1]], pad_id, torch.device("cpu"))
    uniform = not any(s.op == PRUNE_HEADS_OP for s in variant.load_recipe)
    variant.onnx, info = onnx_export.export_checked(variant.model, scratch, sample, uniform, tuning)
    variant.onnx_raw = scratch / "raw.onnx"
    variant.export = info
    return info


def _quantize(
    op: recipe.Operation, variant: Variant, scratch: Path, tuning: OnnxTuning
) -> dict[str, Any]:
    step = op.step
    model = variant.model
    info: dict[str, Any]
    assert step.granularity is not None and step.backend is not None
    if step.backend == "torch":
        variant.quantized = torch_dynamic(model, step.granularity)
        variant.load_recipe.append(torch_load_step(step.granularity))
        info = {
            "backend": "torch",
            "kernels": "torch.ao.quantization dynamic (fbgemm/x86)",
            "granularity": step.granularity,
            "weightType": "qint8",
            "storedAs": "FP32 safetensors + quantizeDynamic load step",
            "quantizedLinears": quantize.quantized_linear_count(variant.quantized),
        }
    else:
        assert variant.onnx is not None  # the plan put an onnxExport before
        raw = tuning.int8_graph == "raw" and variant.onnx_raw is not None
        source = variant.onnx_raw if raw else variant.onnx
        assert source is not None
        target = scratch / "int8.onnx"
        info = quantize.onnx_dynamic(source, target, step.granularity, tuning)
        info["graph"] = "raw export" if raw or source == variant.onnx_raw else "fused"
        variant.onnx = target
    info["choice"] = (
        "default: onnxruntime measured fastest and smallest here "
        "(torch.ao dynamic is slower at batch 1; torchao slower than FP32)"
        if "backend" in op.defaulted
        else "requested by the recipe"
    )
    variant.quantization = info
    return info
