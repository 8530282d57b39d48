"""Loading compressed model artifacts the way the model server does: a safetensors
folder with its load recipe replayed (``pruneHeads`` before the weights are read,
``quantizeDynamic`` after), or an ONNX graph behind a torch-like call.

Used by :mod:`bertops.trainer.compress.pipeline` (to load a parent, possibly
head-pruned), by the tests and by ``benchmarks/compress_bench.py``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from bertops.api.artifacts import ModelManifest
from bertops.trainer.compress import onnx_export, prune, quantize
from bertops.trainer.errors import BadInputError


class OnnxClassifierModule:
    """An onnxruntime session that looks enough like a transformers classifier for
    :func:`bertops.trainer.evaluate.score` (``eval()``, ``model(**batch).logits``)."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.path = path
        self.session = onnx_export.session(path, threads)

    def eval(self) -> OnnxClassifierModule:
        return self

    def __call__(self, **batch: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=torch.from_numpy(onnx_export.run(self.session, batch)))


def load_torch(folder: Path, manifest: ModelManifest, *, apply_quantization: bool = True) -> Any:
    """A torch classifier from safetensors, with the manifest's load recipe applied."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from bertops.trainer import models

    steps = {step.op: step for step in manifest.load_recipe}
    unknown = sorted(set(steps) - {prune.PRUNE_HEADS_OP, quantize.QUANTIZE_OP})
    if unknown:
        raise BadInputError(f"model {folder} has unsupported load step(s) {unknown}")
    if prune.PRUNE_HEADS_OP not in steps:
        model: Any = models.load_artifact_model(folder, manifest.task)
    else:
        models.check_model_folder(folder, "model artifact")
        models.quiet_transformers()
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        model = AutoModelForSequenceClassification.from_config(config)
        prune.rebuild_pruned_heads(model, steps[prune.PRUNE_HEADS_OP].params["heads"])
        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    model.eval()
    if apply_quantization and quantize.QUANTIZE_OP in steps:
        model = quantize.apply_load_step(model, steps[quantize.QUANTIZE_OP])
    return model


def load_any(folder: Path, manifest: ModelManifest) -> Any:
    """What serves this artifact: a torch model or an :class:`OnnxClassifierModule`."""
    if manifest.format == "onnx":
        return OnnxClassifierModule(folder / "model.onnx")
    return load_torch(folder, manifest)
