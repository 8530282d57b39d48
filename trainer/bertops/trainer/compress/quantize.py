"""INT8 dynamic quantization of the Linear layers, two backends:

- ``onnxruntime`` (the default, it measured best here): ``quantize_dynamic`` on the
  exported (fused) ONNX graph; the INT8 file is the artifact, so it is ~4x smaller.
- ``torch``: the artifact stays FP32 safetensors plus a ``quantizeDynamic`` load step
  that every loader replays (:mod:`bertops.modelio.recipe`, which also makes the measured
  copy here); only that copy is quantized. torch's dynamic INT8 kernels live in the
  deprecated ``torch.ao.quantization``; torchao's int8 configs are its successor but ran
  slower than FP32 on CPU in eager mode here (1.26-1.46x), so the old kernels stay.

Called by :mod:`bertops.trainer.compress.pipeline`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any


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
            source,
            target,
            weight_type=QuantType.QInt8,
            per_channel=granularity == "perChannel",
            # Fused contrib ops (Attention, SkipLayerNormalization) defeat shape
            # inference; their outputs are float, which the quantizer must be told.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)
    graph = onnx.load(str(target), load_external_data=False).graph
    ops = [node.op_type for node in graph.node]
    integer_ops = sorted(
        {
            op
            for op in ops
            if op.startswith(
                ("MatMulInteger", "DynamicQuantize", "QAttention", "QEmbed", "DequantizeLinear")
            )
        }
    )
    return {
        "backend": "onnxruntime",
        "granularity": granularity,
        "weightType": "int8",
        "activations": "uint8 dynamic",
        "integerOps": integer_ops,
        "quantizedNodes": sum(
            op
            in ("MatMulInteger", "QAttention", "DynamicQuantizeMatMul", "QEmbedLayerNormalization")
            for op in ops
        ),
    }
