"""INT8 dynamic quantization of the Linear layers, two backends:

- ``onnxruntime`` (the default, it measured best here): ``quantize_dynamic`` on the
  exported (fused) ONNX graph; the INT8 file is the artifact, so it is ~4x smaller.
- ``torch``: the artifact stays FP32 safetensors plus a ``quantizeDynamic`` load step
  that the model server (and :func:`apply_load_step`) replays after loading; only the
  measured copy here is quantized. torch's dynamic INT8 kernels live in the deprecated
  ``torch.ao.quantization``; torchao's int8 configs are its successor but ran slower than
  FP32 on CPU in eager mode here (1.26-1.46x), so the old kernels stay for this backend.

Called by :mod:`bertops.trainer.compress.pipeline`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from bertops.api.artifacts import LoadStep

QUANTIZE_OP = "quantizeDynamic"


def torch_load_step(granularity: str) -> LoadStep:
    return LoadStep(op=QUANTIZE_OP, params={"granularity": granularity, "backend": "torch"})


def torch_dynamic(model: Any, granularity: str) -> Any:
    """A dynamically quantized copy (qint8 weights, activations quantized per batch)."""
    import torch
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    qconfig = per_channel_dynamic_qconfig if granularity == "perChannel" else \
        default_dynamic_qconfig
    with warnings.catch_warnings():
        # Only the deprecation notices of torch.ao itself (see the module docstring).
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, "
                                r"torch\.quantize_per_channel", category=UserWarning)
        return quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=torch.qint8,
                                inplace=False)


def apply_load_step(model: Any, step: LoadStep) -> Any:
    """Replay a ``quantizeDynamic`` load step (what the server does after loading)."""
    if step.op != QUANTIZE_OP or step.params.get("backend", "torch") != "torch":
        raise ValueError(f"unsupported load step {step.op} {step.params}")
    return torch_dynamic(model, str(step.params.get("granularity", "perTensor")))


def quantized_linear_count(model: Any) -> int:
    """Dynamic-quantized Linear modules in a torch model."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return sum(isinstance(m, DynamicLinear) for m in model.modules())


def onnx_dynamic(source: Path, target: Path, granularity: str) -> dict[str, Any]:
    """INT8 weights (MatMul, Gather, fused Attention and embedding ops) with onnxruntime."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    # quantize_dynamic logs a generic "consider pre-processing" advice on the root
    # logger; our graph is already optimised (onnx_export.fuse), so keep stderr clean.
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            source, target, weight_type=QuantType.QInt8,
            per_channel=granularity == "perChannel",
            # Fused contrib ops (Attention, SkipLayerNormalization) defeat shape
            # inference; their outputs are float, which the quantizer must be told.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)
    graph = onnx.load(str(target), load_external_data=False).graph
    ops = [node.op_type for node in graph.node]
    integer_ops = sorted({op for op in ops if op.startswith(("MatMulInteger", "DynamicQuantize",
                                                             "QAttention", "QEmbed",
                                                             "DequantizeLinear"))})
    return {"backend": "onnxruntime", "granularity": granularity,
            "weightType": "int8", "activations": "uint8 dynamic",
            "integerOps": integer_ops,
            "quantizedNodes": sum(op in ("MatMulInteger", "QAttention", "DynamicQuantizeMatMul",
                                         "QEmbedLayerNormalization") for op in ops)}
