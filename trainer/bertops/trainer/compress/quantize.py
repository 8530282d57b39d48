"""INT8 dynamic quantization of the Linear layers, two backends:

- ``onnxruntime`` (the default, it measured best here): ``quantize_dynamic`` of the
  MatMul weights (per channel) on the plain export, plus 4-bit blocks for the embedding
  tables; the quantized file is the artifact, about 0.20 of the FP32 size. The knobs and
  their measured defaults are :class:`bertops.trainer.compress.tuning.OnnxTuning`
  (on MiniLM-L6, batch 1, sequence 128, 2 threads, fastest calls of an interleaved run
  on a loaded machine, ratio to torch FP32: plain export 0.36, offline-fused graph with
  QAttention/QEmbedLayerNormalization 0.41, per-tensor 0.47; 4-bit tables in blocks of
  32: file 0.204 instead of 0.253, macro-F1 +0.4 points on 450 test rows, blocks of 128
  cost 1.2 points).
- ``torch``: the artifact stays FP32 safetensors plus a ``quantizeDynamic`` load step
  that every loader replays (:mod:`bertops.modelio.recipe`, which also makes the measured
  copy here); only that copy is quantized. torch's dynamic INT8 kernels live in the
  deprecated ``torch.ao.quantization``; torchao's int8 configs are its successor but ran
  slower than FP32 on CPU in eager mode here (1.26-1.46x), so the old kernels stay.

Called by :mod:`bertops.trainer.compress.methods`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bertops.trainer.compress.tuning import DEFAULT, OnnxTuning


def quantized_linear_count(model: Any) -> int:
    """Dynamic-quantized Linear modules in a torch model."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return sum(isinstance(m, DynamicLinear) for m in model.modules())


def onnx_dynamic(
    source: Path, target: Path, granularity: str, tuning: OnnxTuning = DEFAULT
) -> dict[str, Any]:
    """INT8 weights of the operator types ``tuning.int8_ops`` (by default MatMul, Gather,
    fused Attention and embedding ops) with onnxruntime; with ``tuning.embedding_bits``
    4, the embedding tables (Gather) get 4-bit blocks instead."""
    import onnx

    int4 = tuning.embedding_bits == 4
    ops = [op for op in tuning.int8_ops if not (int4 and op in EMBEDDING_OPS)]
    root = logging.getLogger()
    level = root.level
    # quantize_dynamic logs a generic "consider pre-processing" advice on the root
    # logger; our graph is already optimised (onnx_export.fuse), so keep stderr clean.
    root.setLevel(logging.ERROR)
    embeddings: dict[str, Any] = {"embeddings": "int8" if set(ops) & set(EMBEDDING_OPS) else "fp32"}
    try:
        _dynamic(source, target, granularity, ops, tuning.matmul_const_b_only)
        if int4:
            block = _int4_gathers(target, target, tuning.embedding_block)
            embeddings = {"embeddings": "int4 blocks", "embeddingBlock": block}
    finally:
        root.setLevel(level)
    nodes = [node.op_type for node in onnx.load(str(target), load_external_data=False).graph.node]
    integer_ops = sorted({op for op in nodes if op.startswith(INTEGER_OP_PREFIXES)})
    return {
        "backend": "onnxruntime",
        "granularity": granularity,
        "tuning": tuning.to_json(),
        "weightType": "int8",
        "activations": "uint8 dynamic",
        **embeddings,
        "integerOps": integer_ops,
        "quantizedNodes": sum(op in QUANTIZED_NODES for op in nodes),
    }


INTEGER_OP_PREFIXES = (
    "MatMulInteger",
    "DynamicQuantize",
    "QAttention",
    "QEmbed",
    "DequantizeLinear",
    "GatherBlockQuantized",
)
QUANTIZED_NODES = (
    "MatMulInteger",
    "QAttention",
    "DynamicQuantizeMatMul",
    "QEmbedLayerNormalization",
    "GatherBlockQuantized",
)
EMBEDDING_OPS = ("EmbedLayerNormalization", "Gather")


def _dynamic(
    source: Path, target: Path, granularity: str, ops: list[str], const_b_only: bool
) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        source,
        target,
        weight_type=QuantType.QInt8,
        per_channel=granularity == "perChannel",
        op_types_to_quantize=ops,
        extra_options={
            # Fused contrib ops (Attention, SkipLayerNormalization) defeat shape
            # inference; their outputs are float, which the quantizer must be told.
            "DefaultTensorType": onnx.TensorProto.FLOAT,
            "MatMulConstBOnly": const_b_only,
        },
    )


def _int4_gathers(source: Path, target: Path, block: int) -> int:
    """Symmetric 4-bit blocks (``block`` values of a row share one scale) for every
    Gather of a constant 2-D table: onnxruntime's GatherBlockQuantized contrib op. The
    word embeddings are over half of a small BERT's weights and only ever looked up, so
    they need no integer kernel, only fewer bytes. Written here with numpy (onnxruntime's
    own MatMulNBitsQuantizer needs the onnx_ir package on top). Returns the block size
    used: never wider than the narrowest table (a tiny test model's hidden size is 64)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    tables = {t.name: t for t in graph.initializer if len(t.dims) == 2}
    gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in tables]
    # Only tables nothing else reads (a tied output projection would need the floats).
    shared = {i for n in graph.node if n.op_type != "Gather" for i in n.input}
    gathers = [n for n in gathers if n.input[0] not in shared]
    while gathers and block > 16 and any(tables[n.input[0]].dims[1] % block for n in gathers):
        block //= 2
    for name in {n.input[0] for n in gathers}:
        values = numpy_helper.to_array(tables[name]).astype(np.float32)
        rows, width = values.shape
        blocks = values.reshape(rows, width // block, block)
        scales = np.abs(blocks).max(axis=-1, keepdims=True) / 7.0
        scales[scales == 0] = 1.0
        quantized = np.clip(np.rint(blocks / scales), -8, 7).astype(np.int8).reshape(-1)
        nibbles = quantized.view(np.uint8) & 0x0F
        # Two values a byte, the first in the low nibble (onnx INT4 packing).
        packed = nibbles[0::2] | (nibbles[1::2] << 4)
        graph.initializer.remove(tables[name])
        graph.initializer.extend(
            [
                onnx.helper.make_tensor(
                    f"{name}_q4", onnx.TensorProto.INT4, [rows, width], packed.tobytes(), raw=True
                ),
                numpy_helper.from_array(scales.reshape(rows, -1), f"{name}_scales"),
            ]
        )
    for node in gathers:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        replacement = onnx.helper.make_node(
            "GatherBlockQuantized",
            [f"{node.input[0]}_q4", node.input[1], f"{node.input[0]}_scales"],
            list(node.output),
            name=f"{node.name}_q4",
            domain="com.microsoft",
            gather_axis=axis,
            quantize_axis=1,
            block_size=block,
        )
        position = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(position, replacement)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(target))
    return block
