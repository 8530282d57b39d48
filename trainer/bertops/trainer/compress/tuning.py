"""Knobs of the onnxruntime path of the ``compress`` step: how the exported graph is fused
before INT8 and which operators get INT8 weights. The defaults are the choices measured
by ``benchmarks/compress_bench.py`` on the 2-core machine (DESIGN section 8).

Not part of the BertModel API: a step started from a spec always runs the defaults; the
benchmark and the tests pass other values in-process (``run_compress(..., tuning=...)``)
to compare them. Whatever ran is recorded in the artifact's measurements
(``onnxExport.tuning``, ``quantization.tuning``), so a served artifact says how it was
built. Used by :mod:`bertops.trainer.compress.pipeline` (the defaults), ``methods``,
``onnx_export`` and ``quantize``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Every operator onnxruntime's dynamic quantizer knows in a fused BERT graph: MatMul
# (feed-forward, pooler, classifier), Attention (its QKV projection -> QAttention),
# EmbedLayerNormalization and Gather (the embedding tables: over half of MiniLM's weights).
ALL_INT8_OPS = ("MatMul", "Attention", "EmbedLayerNormalization", "Gather")


@dataclass(frozen=True)
class OnnxTuning:
    """How the onnxruntime graph is built. ``int8_graph``: what INT8 starts from,
    ``raw`` (the plain export; onnxruntime fuses it when the session starts) or ``fused``
    (the offline transformer fusion of the FP32 export: fused Attention becomes
    QAttention, EmbedLayerNormalization QEmbedLayerNormalization, both slower here than
    the plain ops with INT8 MatMuls). ``fast_gelu``: the fusion writes FastGelu (the
    tanh approximation) instead of the exact erf Gelu. ``int8_ops``: operator types given
    INT8 weights. ``matmul_const_b_only``: only MatMuls with a constant (weight) operand
    are quantized, never activation x activation (the attention scores of an unfused
    graph), which costs accuracy for no speed. ``embedding_bits``: 8 (the embedding
    tables with the other INT8 weights) or 4 (4-bit blocks of ``embedding_block`` values,
    the embeddings left unfused so that a plain Gather can read them)."""

    int8_graph: str = "raw"
    fast_gelu: bool = False
    int8_ops: tuple[str, ...] = ALL_INT8_OPS
    matmul_const_b_only: bool = True
    embedding_bits: int = 4
    embedding_block: int = 32

    def __post_init__(self) -> None:
        if self.int8_graph not in ("raw", "fused"):
            raise ValueError(f"int8_graph must be raw or fused, got {self.int8_graph!r}")
        if self.embedding_bits not in (4, 8):
            raise ValueError(f"embedding_bits must be 4 or 8, got {self.embedding_bits}")
        if self.embedding_block < 16 or self.embedding_block & (self.embedding_block - 1):
            raise ValueError(f"embedding_block must be a power of 2 >= 16: {self.embedding_block}")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["int8_ops"] = list(self.int8_ops)
        return {_camel(k): v for k, v in out.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OnnxTuning:
        """The inverse of :meth:`to_json` (the benchmark's variant table uses it)."""
        fields = {_snake(k): v for k, v in data.items()}
        if "int8_ops" in fields:
            fields["int8_ops"] = tuple(fields["int8_ops"])
        return cls(**fields)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


DEFAULT = OnnxTuning()
