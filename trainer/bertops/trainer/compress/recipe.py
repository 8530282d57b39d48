"""Recipe validation and naming: turn a :class:`~bertops.api.model.Compression` into the
ordered list of operations the ``compress`` step will run, refusing an impossible recipe
before any weights are loaded.

Called first by :mod:`bertops.trainer.compress.pipeline` with only the parent's manifest
and ``config.json`` (cheap to read), so a bad recipe costs milliseconds and exits 2.
Defaults chosen here (quantization backend and granularity, distillation temperature,
alpha and epochs) are written into every planned step, so the recipe recorded in the
lineage says exactly what ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bertops.api.artifacts import ModelManifest
from bertops.api.model import _METHOD_FIELDS, Compression, CompressionStep
from bertops.trainer.errors import BadInputError

# Measured on the 2-core machine (benchmarks/compress_bench.py, DESIGN section 8): ONNX
# Runtime INT8 of the fused graph beats torch.ao dynamic INT8 at batch 1 and matches it at
# batch 32, with a 4x smaller file; torchao's int8 configs ran slower than FP32 on CPU in
# eager mode (1.26-1.46x). So a quantize step without a backend means onnxruntime.
DEFAULT_BACKEND = "onnxruntime"
# Per-channel scales cost nothing in latency (onnxruntime, MiniLM-L6 batch 1: fastest calls
# 0.41 of torch FP32 per channel, 0.47 per tensor) and keep more macro-F1 (per tensor lost
# 0.4 points more on 450 test rows); they also halve the logit error.
DEFAULT_GRANULARITY = "perChannel"
DEFAULT_SCOPE = "global"
DEFAULT_TEMPERATURE = 2.0
DEFAULT_ALPHA = 0.5
DEFAULT_DISTILL_EPOCHS = 3  # distill with fineTuneEpochs 0: a student needs some training
ONNX_OPSET = 17

# Load-recipe ops this trainer writes; a parent carrying another one cannot be rebuilt.
LOADABLE_PARENT_OPS = ("pruneHeads",)


@dataclass(frozen=True)
class Operation:
    """One unit of work, with every default resolved."""

    method: str
    step: CompressionStep
    label: str
    implicit: bool = False  # an onnxExport the recipe implied (quantize with onnxruntime)
    defaulted: tuple[str, ...] = ()  # fields the recipe left out and this module chose


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def describe(step: CompressionStep) -> str:
    """The human string recorded in lineage.recipe, e.g. ``quantize(perChannel,onnxruntime)``."""
    tune = f",fineTuneEpochs={step.fine_tune_epochs}" if step.fine_tune_epochs else ""
    if step.method == "magnitudePrune":
        return f"magnitudePrune(sparsity={_num(step.sparsity)},{step.scope}{tune})"
    if step.method == "headPrune":
        return f"headPrune(heads={step.heads_to_prune}{tune})"
    if step.method == "quantize":
        return f"quantize({step.granularity},{step.backend})"
    if step.method == "onnxExport":
        return f"onnxExport(opset={ONNX_OPSET})"
    return (
        f"distill(studentLayers={step.student_layers},T={_num(step.temperature)},"
        f"alpha={_num(step.alpha)},epochs={step.fine_tune_epochs})"
    )


def _misplaced_fields(step: CompressionStep) -> list[str]:
    # The API server's CEL rules refuse these; a spec that bypassed it is refused here.
    wire = step.model_dump(by_alias=True, exclude_none=True)
    return [
        name for name, method in _METHOD_FIELDS.items() if name in wire and method != step.method
    ]


@dataclass
class _Planning:
    """The model as the steps planned so far leave it, and every problem found so far:
    each step is checked against what the steps before it made of the parent."""

    layers: int
    heads: int  # attention heads left in the whole model
    head_pruned: bool  # heads were removed (by the parent or a step): distill cannot follow
    train_rows: int
    stage: str = "torch"  # torch -> onnx -> quantized; nothing runs after quantize
    problems: list[str] = field(default_factory=list)

    @classmethod
    def of_parent(cls, config: dict[str, Any], train_rows: int) -> _Planning:
        layers = int(config.get("num_hidden_layers", 0))
        heads_per_layer = int(config.get("num_attention_heads", 0))
        already_pruned = sum(len(v) for v in (config.get("pruned_heads") or {}).values())
        return cls(
            layers=layers,
            heads=layers * heads_per_layer - already_pruned,
            head_pruned=already_pruned > 0,
            train_rows=train_rows,
        )


def _parent_problems(parent: ModelManifest) -> list[str]:
    """Why the parent artifact cannot be compressed at all, whatever the recipe."""
    problems: list[str] = []
    if parent.format != "safetensors":
        problems.append(
            f"the parent is a {parent.format} artifact; compression starts from "
            "safetensors weights (compress the parent's own parent instead)"
        )
    for load_step in parent.load_recipe:
        if load_step.op not in LOADABLE_PARENT_OPS:
            problems.append(
                f"the parent carries load step {load_step.op!r} (already "
                "quantized?); compress from an unquantized model"
            )
    return problems


def _common_step_problems(raw: CompressionStep, where: str, planning: _Planning) -> list[str]:
    """The checks every method shares: misplaced fields, the step's place in the recipe
    and whether it has the training rows it needs."""
    problems = [
        f"{where}: {name} only applies to {_METHOD_FIELDS[name]}" for name in _misplaced_fields(raw)
    ]
    if planning.stage == "quantized":
        problems.append(f"{where}: nothing can follow quantize (it must be the last step)")
    needs_torch = raw.method in ("magnitudePrune", "headPrune", "distill")
    if needs_torch and planning.stage == "onnx":
        problems.append(f"{where}: runs on torch weights, so it must come before onnxExport")
    if raw.method in ("quantize", "onnxExport") and raw.fine_tune_epochs:
        problems.append(f"{where}: fineTuneEpochs does not apply to {raw.method}")
    trains = raw.method == "distill" or raw.fine_tune_epochs > 0
    if trains and planning.train_rows == 0:
        problems.append(f"{where}: needs training rows, and the dataset's train split is empty")
    return problems


def _operation(step: CompressionStep, defaulted: tuple[str, ...] = ()) -> Operation:
    return Operation(step.method, step, describe(step), defaulted=defaulted)


def _magnitude_prune(raw: CompressionStep, where: str, planning: _Planning) -> list[Operation]:
    sparsity = raw.sparsity
    if sparsity is None or not 0 < sparsity < 1:
        planning.problems.append(f"{where}: sparsity must be a fraction in (0, 1), got {sparsity}")
    step = raw.model_copy(update={"scope": raw.scope or DEFAULT_SCOPE})
    return [_operation(step, ("scope",) if raw.scope is None else ())]


def _head_prune(raw: CompressionStep, where: str, planning: _Planning) -> list[Operation]:
    wanted = raw.heads_to_prune or 0
    # Each layer keeps at least one head: an attention layer without heads is not a
    # smaller model, it is a different architecture.
    removable = planning.heads - planning.layers
    if wanted < 1 or wanted > removable:
        planning.problems.append(
            f"{where}: headsToPrune {wanted} is impossible: the model has {planning.heads} "
            f"head(s) in {planning.layers} layer(s) and every layer keeps at least one, so "
            f"at most {max(removable, 0)} can be removed"
        )
    else:
        planning.heads -= wanted
    planning.head_pruned = True
    return [_operation(raw)]


def _distill(raw: CompressionStep, where: str, planning: _Planning) -> list[Operation]:
    target = raw.student_layers
    if planning.head_pruned:
        planning.problems.append(
            f"{where}: distill before headPrune (a student is cut from whole teacher layers)"
        )
    if target is None or not 1 <= target < planning.layers:
        planning.problems.append(
            f"{where}: studentLayers must be between 1 and {planning.layers - 1} "
            f"(the parent has {planning.layers} layers), got {target}"
        )
    else:
        planning.heads = planning.heads // planning.layers * target
        planning.layers = target
    step = raw.model_copy(
        update={
            "temperature": raw.temperature or DEFAULT_TEMPERATURE,
            "alpha": DEFAULT_ALPHA if raw.alpha is None else raw.alpha,
            "fine_tune_epochs": raw.fine_tune_epochs or DEFAULT_DISTILL_EPOCHS,
        }
    )
    defaulted = tuple(f for f in ("temperature", "alpha") if getattr(raw, f) is None)
    return [_operation(step, defaulted + (("fineTuneEpochs",) if not raw.fine_tune_epochs else ()))]


def _onnx_export(raw: CompressionStep, where: str, planning: _Planning) -> list[Operation]:
    if planning.stage != "torch":
        planning.problems.append(f"{where}: the model is already exported")
    planning.stage = "onnx"
    return [_operation(raw)]


def _quantize(raw: CompressionStep, where: str, planning: _Planning) -> list[Operation]:
    stage = planning.stage
    backend = raw.backend or (DEFAULT_BACKEND if stage == "torch" else "onnxruntime")
    if stage == "onnx" and backend != "onnxruntime":
        planning.problems.append(
            f"{where}: an exported ONNX model is quantized with backend onnxruntime, not torch"
        )
    step = raw.model_copy(
        update={"backend": backend, "granularity": raw.granularity or DEFAULT_GRANULARITY}
    )
    defaulted = tuple(f for f in ("backend", "granularity") if getattr(raw, f) is None)
    ops = [_operation(step, defaulted)]
    if backend == "onnxruntime" and stage == "torch":
        # onnxruntime quantizes an ONNX graph: the recipe implied the export before it.
        export = CompressionStep(method="onnxExport")
        ops.insert(0, Operation("onnxExport", export, describe(export), implicit=True))
    planning.stage = "quantized"
    return ops


# Each method's own check, all with one signature: the step as written, where it stands
# in the recipe (for messages) and the planning so far, which it updates with what the
# step does to the model and any problem found. It returns the step's operations, every
# default resolved. The order is the one the "unknown method" message lists.
Validator = Callable[[CompressionStep, str, _Planning], list[Operation]]
VALIDATORS: dict[str, Validator] = {
    "magnitudePrune": _magnitude_prune,
    "headPrune": _head_prune,
    "quantize": _quantize,
    "onnxExport": _onnx_export,
    "distill": _distill,
}
KNOWN_METHODS = tuple(VALIDATORS)


def plan(
    compression: Compression, parent: ModelManifest, config: dict[str, Any], *, train_rows: int
) -> list[Operation]:
    """The operations to run, or :class:`BadInputError` listing every problem found."""
    planning = _Planning.of_parent(config, train_rows)
    planning.problems.extend(_parent_problems(parent))
    ops: list[Operation] = []
    for number, raw in enumerate(compression.steps, start=1):
        where = f"step {number} ({raw.method})"
        validate = VALIDATORS.get(raw.method)
        if validate is None:
            planning.problems.append(f"{where}: unknown method; known: {', '.join(KNOWN_METHODS)}")
            continue
        planning.problems.extend(_common_step_problems(raw, where, planning))
        ops.extend(validate(raw, where, planning))
    if planning.problems:
        raise BadInputError("compression recipe refused: " + "; ".join(planning.problems))
    return ops


def final_format(ops: list[Operation]) -> str:
    return "onnx" if any(op.method == "onnxExport" for op in ops) else "safetensors"
