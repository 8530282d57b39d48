"""Export a torch sequence classifier to ONNX for onnxruntime, fuse it with
onnxruntime's transformer optimizer (Attention, EmbedLayerNormalization,
SkipLayerNormalization, BiasGelu), and check the graph against torch before it is used.

Called by :mod:`bertops.trainer.compress.methods`. The graph's inputs are ``input_ids``
and ``attention_mask`` (int64, dynamic batch and sequence), its output ``logits``;
``token_type_ids`` is left to its default (all zeros), as for single-sentence tasks.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertops.trainer.compress.tuning import DEFAULT, OnnxTuning
from bertops.trainer.errors import StepError

OPSET = 17
INPUTS = ("input_ids", "attention_mask")
PARITY_ATOL = 1e-3  # FP32 graph vs torch, on logits
# FastGelu (tanh approximation) is off by up to ~1e-3 per activation by design; the
# quality gate judges its effect on the metrics, this only catches a broken graph.
FAST_GELU_ATOL = 2e-2


@contextlib.contextmanager
def _eager_attention(model: Any) -> Iterator[None]:
    """SDPA traces to a graph the fusion does not recognise; eager attention traces to
    the classic MatMul/Softmax pattern that becomes one fused Attention node."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def export(model: Any, path: Path, sample: dict[str, torch.Tensor]) -> None:
    model.eval()
    args = tuple(sample[name] for name in INPUTS)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    axes["logits"] = {0: "batch"}
    with _eager_attention(model), warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter (dynamo=False) needs no onnxscript and gives the graph
        # onnxruntime's BERT fusion knows; tracing warns about Python-side shape checks
        # in transformers that are constant for a BERT classifier.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # It is deprecated in favour of the torch.export-based exporter (which needs
        # onnxscript and emits a graph the fusion does not match yet); it still works.
        warnings.filterwarnings(
            "ignore",
            category=DeprecationWarning,
            message=r"You are using the legacy TorchScript-based ONNX",
        )
        # ... and its own internals call helpers deprecated along with it.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        # transformers builds the attention mask with advanced indexing; the warning is
        # about negative indices, which it does not use (and export_checked compares the
        # graph with torch on other shapes than the traced ones).
        warnings.filterwarnings(
            "ignore",
            category=UserWarning,
            message=r"Exporting aten::index operator of advanced indexing",
        )
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=list(INPUTS),
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def fuse(
    source: Path, target: Path, num_heads: int, hidden_size: int, tuning: OnnxTuning = DEFAULT
) -> dict[str, int]:
    """onnxruntime's offline BERT fusion; returns the fused operator counts."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_gelu_approximation = tuning.fast_gelu
    # 4-bit embedding tables are read by GatherBlockQuantized, which only replaces a
    # plain Gather: a fused graph meant for them keeps its embeddings unfused.
    options.enable_embed_layer_norm = not (
        tuning.int8_graph == "fused" and tuning.embedding_bits == 4
    )

    logger = logging.getLogger("onnxruntime.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)  # fusion statistics are info for people, not stdout
    try:
        optimized = optimize_model(
            str(source),
            model_type="bert",
            num_heads=num_heads,
            hidden_size=hidden_size,
            opt_level=1,
            optimization_options=options,
        )
        optimized.save_model_to_file(str(target))
        stats = optimized.get_fused_operator_statistics()
    finally:
        logger.setLevel(level)
    return {k: int(v) for k, v in stats.items() if v}


def session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime session with the options the model server uses
    (``bertops.server.model.onnx_session_options``), so what is measured here is what
    serves; ``threads`` defaults to torch's, so both frameworks get the same cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Sleeping, not spinning, worker threads: see the server's onnx_session_options.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess: Any, batch: dict[str, torch.Tensor]) -> np.ndarray:
    names = [i.name for i in sess.get_inputs()]
    feed = {name: batch[name].cpu().numpy().astype(np.int64) for name in names}
    out: np.ndarray = sess.run(None, feed)[0]
    return out


def max_difference(path: Path, model: Any, sample: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        expected = model(**{k: sample[k] for k in INPUTS}).logits.float().numpy()
    return float(np.abs(run(session(path), sample) - expected).max())


def export_checked(
    model: Any,
    folder: Path,
    sample: dict[str, torch.Tensor],
    uniform_heads: bool,
    tuning: OnnxTuning = DEFAULT,
) -> tuple[Path, dict[str, Any]]:
    """Export, fuse when the heads are uniform (the fused Attention assumes one head count
    for all layers), and keep the fused graph only if it matches torch."""
    raw = folder / "raw.onnx"
    # Trace on one row and check on the whole sample: a shape baked in by tracing would
    # show up as a mismatch instead of a wrong answer in production.
    first = int(sample["attention_mask"][0].sum())
    export(model, raw, {k: v[:1, :first] for k, v in sample.items()})
    info: dict[str, Any] = {"opset": OPSET, "exporter": "torchscript", "fused": {}}
    difference = max_difference(raw, model, sample)
    if difference > PARITY_ATOL:
        raise StepError(f"ONNX export differs from torch by {difference:.2g} on logits")
    info["maxAbsDiffVsTorch"] = difference
    if uniform_heads:
        fused = folder / "fused.onnx"
        config = model.config
        stats = fuse(raw, fused, config.num_attention_heads, config.hidden_size, tuning)
        fused_difference = max_difference(fused, model, sample)
        if fused_difference <= (FAST_GELU_ATOL if tuning.fast_gelu else PARITY_ATOL):
            info.update(fused=stats, maxAbsDiffVsTorch=fused_difference, fastGelu=tuning.fast_gelu)
            return fused, info
        info["fusionRejected"] = f"fused graph differs by {fused_difference:.2g}"
    return raw, info
