"""Loading model artifacts the way the model server does, for the trainer: the shared
load-recipe replay of :mod:`bertops.modelio.recipe` (``load_torch``), plus an ONNX graph
behind a torch-like call so the trainer's scoring runs it unchanged.

Used by :mod:`bertops.trainer.compress.pipeline` (to load a parent, possibly
head-pruned), by :mod:`bertops.trainer.compress.methods` (to run an ONNX variant), by
the tests and by ``benchmarks/compress_bench.py``; always on a folder verified against
its manifest first.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from bertops.api.artifacts import ModelManifest
from bertops.modelio import recipe
from bertops.trainer.compress import onnx_export

# The one loader of safetensors artifacts (the pipeline calls it through this module).
load_torch = recipe.load_torch


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


def load_any(folder: Path, manifest: ModelManifest) -> Any:
    """What serves this artifact: a torch model or an :class:`OnnxClassifierModule`."""
    if manifest.format == "onnx":
        # onnxruntime reads the graph when the session is made; a quantized copy made by
        # the load recipe only has to live until then.
        with tempfile.TemporaryDirectory(prefix="bertops-onnx-") as scratch:
            return OnnxClassifierModule(recipe.onnx_graph(folder, manifest, Path(scratch)))
    return load_torch(folder, manifest)
