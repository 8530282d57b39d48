"""The onnxruntime path's knobs (:mod:`bertops.trainer.compress.tuning`) on the tiny
trained BERT: each one changes the graph the way it says, the artifact still verifies,
records what ran, stays close to its parent and is served by the model server; plus the
interleaved timing the benchmark and the step rely on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from bertops.trainer.compress.tuning import ALL_INT8_OPS, OnnxTuning
from tests.compress.conftest import _load, _logits, _parent, manifest_of

INT8 = {"method": "quantize", "backend": "onnxruntime", "granularity": "perChannel"}


FUSED: dict[str, Any] = {"int8_graph": "fused", "embedding_bits": 8}


@pytest.mark.parametrize(
    ("tuning", "present", "absent"),
    [
        pytest.param(
            OnnxTuning(),
            {"GatherBlockQuantized", "MatMulInteger"},
            {"Attention", "QAttention", "QEmbedLayerNormalization"},
            id="default",
        ),
        pytest.param(
            OnnxTuning(embedding_bits=8),
            {"MatMulInteger"},
            {"GatherBlockQuantized", "QAttention"},
            id="raw-int8-embeddings",
        ),
        pytest.param(
            OnnxTuning(**FUSED),
            {"QAttention", "QEmbedLayerNormalization"},
            {"Attention"},
            id="fused",
        ),
        pytest.param(
            OnnxTuning(**FUSED, fast_gelu=True),
            {"FastGelu", "QAttention"},
            {"BiasGelu"},
            id="fused-fastGelu",
        ),
        pytest.param(
            OnnxTuning(**FUSED, int8_ops=("MatMul", "EmbedLayerNormalization", "Gather")),
            {"Attention", "MatMulInteger"},
            {"QAttention"},
            id="fused-fp32-attention",
        ),
        pytest.param(
            OnnxTuning(**FUSED, int8_ops=("MatMul", "Attention")),
            {"EmbedLayerNormalization", "QAttention"},
            {"QEmbedLayerNormalization"},
            id="fused-fp32-embeddings",
        ),
        pytest.param(
            OnnxTuning(int8_graph="fused", embedding_bits=4, embedding_block=32),
            {"GatherBlockQuantized", "QAttention"},
            {"EmbedLayerNormalization", "QEmbedLayerNormalization"},
            id="fused-int4-embeddings",
        ),
    ],
)
def test_tuning_shapes_the_int8_graph_and_the_artifact_serves(
    tuning: OnnxTuning,
    present: set[str],
    absent: set[str],
    compress: Any,
    trained: tuple[Path, Any],
    prepared: Path,
) -> None:
    import onnx

    from bertops.server.model import ServedModel

    result, output = compress([INT8], tuning=tuning)
    assert result.succeeded, result.message
    manifest = manifest_of(output)  # every file's sha256 checks out
    assert manifest.format == "onnx"
    ops = {node.op_type for node in onnx.load(str(output / "model.onnx")).graph.node}
    assert present <= ops, sorted(ops)
    assert not ops & absent, sorted(ops)
    quantization = manifest.measurements["quantization"]
    recorded = quantization["tuning"]
    assert recorded == tuning.to_json()
    assert quantization["graph"] == ("raw export" if tuning.int8_graph == "raw" else "fused")
    int8_tables = {"EmbedLayerNormalization", "Gather"} & set(tuning.int8_ops)
    expected = "int4 blocks" if tuning.embedding_bits == 4 else "int8" if int8_tables else "fp32"
    assert quantization["embeddings"] == expected
    assert OnnxTuning.from_json(recorded) == tuning
    assert manifest.measurements["onnxExport"]["fastGelu"] is tuning.fast_gelu
    parent, variant = _logits(_parent(trained), prepared), _logits(_load(output), prepared)
    assert (parent.argmax(-1) == variant.argmax(-1)).float().mean() >= 0.9
    served = ServedModel(str(output), threads=1)
    served.load()
    answers = served.predict(["i love this so much", "worst day ever"])
    assert [a.label for a in answers] == [
        manifest.labels[i] for i in _logits_of_texts(output, served).argmax(-1).tolist()
    ]


def _logits_of_texts(output: Path, served: Any) -> torch.Tensor:
    """The trainer's loader on the server's own tokenization (same texts as above)."""
    encoded = served.classifier.tokenizer(
        ["i love this so much", "worst day ever"], padding=True, return_tensors="pt"
    )
    model = _load(output)
    return torch.as_tensor(model(**{k: encoded[k] for k in ("input_ids", "attention_mask")}).logits)


def test_default_tuning_quantizes_every_known_operator() -> None:
    default = OnnxTuning()
    assert default.int8_ops == ALL_INT8_OPS and default.matmul_const_b_only
    assert OnnxTuning.from_json(default.to_json()) == default
    assert set(default.to_json()) == {
        "int8Graph",
        "fastGelu",
        "int8Ops",
        "matmulConstBOnly",
        "embeddingBits",
        "embeddingBlock",
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"embedding_bits": 2}, "embedding_bits must be 4 or 8"),
        ({"int8_graph": "optimised"}, "int8_graph must be raw or fused"),
        ({"embedding_block": 48}, "power of 2"),
        ({"embedding_block": 8}, "power of 2"),
    ],
)
def test_impossible_tuning_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OnnxTuning(**fields)


def test_interleave_rotates_the_order_and_times_every_runner() -> None:
    from bertops.trainer.compress import measure

    log: list[str] = []

    def runner(name: str) -> measure.Forward:
        return lambda batch: log.append(f"{name}{batch['input_ids'].shape[0]}")

    batches = {size: measure.synthetic_batch(size, 100, length=4) for size in (1, 32)}
    budget = measure.Budget(rounds=3, batch1_calls=2, batch32_calls=1, warmup=0, switch_calls=0)
    rounds: list[int] = []
    timings = measure.interleave(
        {n: runner(n) for n in "abc"}, batches, budget, on_round=rounds.append
    )
    assert rounds == [1, 2, 3]
    timed = log[6:]  # after the untimed first call of each runner on each batch
    per_round = 3 * 2 + 3 * 1
    firsts = [timed[r * per_round][0] for r in range(3)]
    assert firsts == ["a", "b", "c"]  # the order rotates
    for name in "abc":
        assert len(timings.calls[(name, 1)]) == 6 and len(timings.calls[(name, 32)]) == 3
        assert len(timings.rounds[(name, 1)]) == 3


@pytest.mark.parametrize(
    ("variant", "base", "expected"),
    [
        ([1.0, 2.0, 3.0], [2.0, 2.0, 2.0], {"median": 1.0, "min": 0.5, "max": 1.5}),
        ([5.0], [10.0], {"median": 0.5, "p25": 0.5, "p75": 0.5}),
    ],
)
def test_round_ratios(variant: list[float], base: list[float], expected: dict[str, float]) -> None:
    from bertops.trainer.compress import measure

    stats = measure.round_ratios(variant, base)
    assert {k: stats[k] for k in expected} == expected
