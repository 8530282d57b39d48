"""Replaying a model manifest's load recipe: the one loader of safetensors model artifacts
(``pruneHeads`` rebuilds the smaller attention before the weights are read,
``quantizeDynamic`` runs after) and of ONNX ones (quantized by onnxruntime at load time).

Called by ``bertops.server.model`` (serving), ``bertops.trainer.compress`` (loading a
parent, measuring a variant) and ``benchmarks/compress_bench.py``, always on a folder that
was verified against its manifest first. Weights are read from safetensors only, never a
pickle. An unknown op is refused, never skipped: serving something other than what was
measured would be silent drift. Failures raise :class:`bertops.api.artifacts.ArtifactError`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from bertops.api.artifacts import ArtifactError, LoadStep, ModelManifest
from bertops.modelio.heads import PRUNE_HEADS_OP, rebuild_pruned_heads

QUANTIZE_OP = "quantizeDynamic"
# The task switch: one entry per task, for loading here and for building in the trainer;
# token classification arrives with its own head, data layout and metrics.
TASK_MODEL_CLASSES: dict[str, str] = {
    "sequenceClassification": "AutoModelForSequenceClassification",
}


def torch_load_step(granularity: str) -> LoadStep:
    return LoadStep(op=QUANTIZE_OP, params={"granularity": granularity, "backend": "torch"})


def torch_dynamic(model: Any, granularity: str) -> Any:
    """A dynamically quantized copy (qint8 weights of every Linear, activations quantized
    per batch) with torch's fbgemm/x86 kernels."""
    import torch
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    qconfig = (
        per_channel_dynamic_qconfig if granularity == "perChannel" else (default_dynamic_qconfig)
    )
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, whose int8 kernels are
        # not fast on CPU in eager mode; the fbgemm/x86 dynamic kernels still are (DESIGN
        # section 8). Silence only these two deprecation notices.
        warnings.filterwarnings(
            "ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore",
            message=r"torch\.quantize_per_tensor, "
            r"torch\.quantize_per_channel",
            category=UserWarning,
        )
        return quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=torch.qint8, inplace=False)


def apply_torch_step(model: Any, step: LoadStep) -> Any:
    """One ``quantizeDynamic`` step on a torch model (backend torch or torchao)."""
    if step.op != QUANTIZE_OP:
        raise ArtifactError(f"unsupported load step {step.op!r} for a safetensors artifact")
    backend = step.params.get("backend", "torch")
    if backend == "torchao":
        try:
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
        except ImportError as error:
            raise ArtifactError("load step wants torchao, which is not installed") from error
        quantize_(model, Int8DynamicActivationInt8WeightConfig())
        return model
    if backend != "torch":
        raise ArtifactError(f"unsupported quantization backend {backend!r}")
    return torch_dynamic(model, str(step.params.get("granularity", "perTensor")))


def _model_class(manifest: ModelManifest) -> Any:
    class_name = TASK_MODEL_CLASSES.get(manifest.task)
    if class_name is None:
        raise ArtifactError(f"task {manifest.task} cannot be loaded by this version")
    import transformers

    return getattr(transformers, class_name)


def _rebuild_pruned(folder: Path, model_class: Any, step: LoadStep) -> Any:
    """Build from config, shrink attention to the kept heads, then load strictly."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    config.pruned_heads = {}
    model = model_class.from_config(config)
    try:
        rebuild_pruned_heads(model, step.params["heads"])
        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    except (KeyError, ValueError, RuntimeError, OSError) as error:
        raise ArtifactError(f"cannot rebuild the head-pruned model: {error}") from error
    return model


def load_torch(folder: Path, manifest: ModelManifest, *, apply_quantization: bool = True) -> Any:
    """A torch classifier (in eval mode) from a verified safetensors folder, with the
    manifest's load recipe replayed; ``apply_quantization=False`` keeps FP32 weights."""
    unknown = [s.op for s in manifest.load_recipe if s.op not in (PRUNE_HEADS_OP, QUANTIZE_OP)]
    if unknown:
        raise ArtifactError(f"unsupported load step {unknown[0]!r} for a safetensors artifact")
    if not (folder / "config.json").is_file():
        raise ArtifactError(f"model artifact {folder} has no config.json")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stdout/logs are not a terminal
    model_class = _model_class(manifest)
    pruned = next((s for s in manifest.load_recipe if s.op == PRUNE_HEADS_OP), None)
    if pruned is not None:
        model = _rebuild_pruned(folder, model_class, pruned)
    else:
        try:
            # use_safetensors=True makes transformers refuse pickled weights outright.
            model = model_class.from_pretrained(
                str(folder), use_safetensors=True, local_files_only=True
            )
        except (OSError, ValueError) as error:
            raise ArtifactError(f"cannot load the model in {folder}: {error}") from error
    model.eval()
    if apply_quantization:
        for step in manifest.load_recipe:
            if step.op == QUANTIZE_OP:
                model = apply_torch_step(model, step)
    return model


def onnx_graph(folder: Path, manifest: ModelManifest, scratch: Path) -> Path:
    """The ONNX file to run: the stored graph, or a copy in ``scratch`` quantized by
    onnxruntime as the recipe says (the stored file stays the measured one)."""
    unknown = [s.op for s in manifest.load_recipe if s.op != QUANTIZE_OP]
    if unknown:
        raise ArtifactError(f"unsupported load step {unknown[0]!r} for an onnx artifact")
    path = folder / "model.onnx"
    for number, step in enumerate(manifest.load_recipe):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        target = scratch / f"model.{number}.onnx"
        quantize_dynamic(
            path,
            target,
            weight_type=QuantType.QInt8,
            per_channel=step.params.get("granularity") == "perChannel",
        )
        path = target
    return path
