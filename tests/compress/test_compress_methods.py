"""Each compression method on a tiny trained BERT changes what it should (sparsity, heads,
layers, INT8 layers, the ONNX graph), a quantized or exported model stays close to its
parent, and methods compose in one recipe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.compress.conftest import _load, _logits, _parent, manifest_of


@pytest.mark.parametrize("scope", ["global", "perLayer"])
def test_magnitude_prune_reaches_sparsity(
    scope: str, compress: Any, trained: tuple[Path, Any]
) -> None:
    from bertops.trainer.compress import prune

    result, output = compress([{"method": "magnitudePrune", "sparsity": 0.6, "scope": scope}])
    assert result.succeeded, result.message
    manifest = manifest_of(output)
    assert manifest.format == "safetensors" and manifest.load_recipe == []
    model = _load(output)
    assert prune.encoder_sparsity(model) >= 0.6
    assert prune.encoder_sparsity(_parent(trained)) < 0.01
    assert manifest.lineage.recipe == [f"magnitudePrune(sparsity=0.6,{scope})"]
    assert manifest.lineage.parent_model == manifest_of(trained[0]).name


def test_magnitude_prune_fine_tune_keeps_zeros(compress: Any) -> None:
    from bertops.trainer.compress import prune

    result, output = compress([{"method": "magnitudePrune", "sparsity": 0.5, "fineTuneEpochs": 1}])
    assert result.succeeded, result.message
    assert prune.encoder_sparsity(_load(output)) >= 0.5
    assert result.details.steps[0]["fineTune"]["epochs"] == 1


def test_head_prune_removes_heads_and_config_says_so(
    compress: Any, trained: tuple[Path, Any]
) -> None:
    from bertops.trainer.compress import prune

    result, output = compress([{"method": "headPrune", "headsToPrune": 2}])
    assert result.succeeded, result.message
    config = json.loads((output / "config.json").read_text())
    pruned = config["pruned_heads"]
    assert sum(len(v) for v in pruned.values()) == 2
    manifest = manifest_of(output)
    assert manifest.load_recipe[0].op == "pruneHeads"
    assert manifest.load_recipe[0].params["heads"] == pruned
    model = _load(output)  # strict load of the smaller attention
    assert prune.heads_per_layer(model) == [1, 1]  # every layer keeps one head
    assert result.details.parameters < result.details.parent_parameters
    # The reloaded model is the one that was scored.
    assert manifest.metrics["test"]["accuracy"] == result.details.test_metrics["accuracy"]


@pytest.mark.parametrize("granularity", ["perTensor", "perChannel"])
def test_torch_int8_has_quantized_layers_and_stays_close(
    granularity: str, compress: Any, trained: tuple[Path, Any], prepared: Path
) -> None:
    from bertops.trainer.compress import quantize

    result, output = compress(
        [{"method": "quantize", "backend": "torch", "granularity": granularity}]
    )
    assert result.succeeded, result.message
    manifest = manifest_of(output)
    assert manifest.format == "safetensors"
    assert [s.model_dump() for s in manifest.load_recipe] == [
        {"op": "quantizeDynamic", "params": {"granularity": granularity, "backend": "torch"}}
    ]
    model = _load(output)
    assert quantize.quantized_linear_count(model) >= 12  # 6 per layer, 2 layers (+ head)
    parent, variant = _logits(_parent(trained), prepared), _logits(model, prepared)
    assert (parent - variant).abs().max() < 0.1 * parent.abs().max()
    assert (parent.argmax(-1) == variant.argmax(-1)).float().mean() >= 0.9
    assert manifest.measurements["quantization"]["backend"] == "torch"


def test_onnx_int8_graph_is_quantized_measured_and_close(
    compress: Any, trained: tuple[Path, Any], prepared: Path
) -> None:
    import onnx

    from bertops.trainer.compress.tuning import OnnxTuning

    # INT8 tables: this is about the INT8 kernels. The default 4-bit embedding tables
    # move the tiny model's logits more (its embeddings are most of its weights; on
    # MiniLM, blocks of 32 cost no measurable macro-F1, see compress_bench.py):
    # test_onnx_tuning checks them by argmax.
    result, output = compress(
        [{"method": "quantize"}], measure_latency=True, tuning=OnnxTuning(embedding_bits=8)
    )
    assert result.succeeded, result.message
    manifest = manifest_of(output)
    assert manifest.format == "onnx" and (output / "model.onnx").is_file()
    assert manifest.lineage.recipe == ["onnxExport(opset=17)", "quantize(perChannel,onnxruntime)"]
    ops = {node.op_type for node in onnx.load(str(output / "model.onnx")).graph.node}
    assert ops & {"MatMulInteger", "QAttention", "DynamicQuantizeMatMul"}
    quantization = manifest.measurements["quantization"]
    assert quantization["backend"] == "onnxruntime" and quantization["choice"].startswith("default")
    parent, variant = _logits(_parent(trained), prepared), _logits(_load(output), prepared)
    assert (parent - variant).abs().max() < 0.1 * parent.abs().max()
    assert (parent.argmax(-1) == variant.argmax(-1)).float().mean() >= 0.9
    # What the operator copies into status, with the keys it expects.
    latency = result.details.latency
    assert set(latency) == {
        "p50Batch1Ms",
        "p95Batch1Ms",
        "p50Batch32Ms",
        "p95Batch32Ms",
        "throughputPerSecond",
    }
    assert manifest.measurements["latency"] == latency
    assert latency["p95Batch1Ms"] >= latency["p50Batch1Ms"] > 0
    assert set(result.details.quality_delta) == {"accuracy", "macroF1"}
    assert (
        manifest.measurements["bytesOnDisk"]
        == result.details.bytes_on_disk
        == sum(f.bytes for f in manifest.files)
    )
    assert (
        manifest.measurements["weightsBytes"]
        < 0.4 * (trained[0] / "model.safetensors").stat().st_size
    )
    assert set(manifest.metrics["test"]) >= {"accuracy", "macroF1", "precision", "recall", "loss"}
    assert result.artifacts == {"model": str(output)}


def test_onnx_export_fp32_matches_torch(
    compress: Any, trained: tuple[Path, Any], prepared: Path
) -> None:
    result, output = compress([{"method": "onnxExport"}])
    assert result.succeeded, result.message
    assert manifest_of(output).format == "onnx"
    parent, variant = _logits(_parent(trained), prepared), _logits(_load(output), prepared)
    assert (parent - variant).abs().max() < 1e-3
    assert result.details.quality_delta == {"accuracy": 0.0, "macroF1": 0.0}


def test_distill_student_has_fewer_layers(compress: Any) -> None:
    result, output = compress(
        [
            {
                "method": "distill",
                "studentLayers": 1,
                "temperature": 2.0,
                "alpha": 0.5,
                "fineTuneEpochs": 2,
            }
        ]
    )
    assert result.succeeded, result.message
    config = json.loads((output / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    assert result.details.parameters < result.details.parent_parameters
    assert result.details.steps[0]["teacherLayers"] == [1]
    assert manifest_of(output).lineage.recipe == ["distill(studentLayers=1,T=2,alpha=0.5,epochs=2)"]


def test_composed_recipe_distill_prune_quantize(compress: Any) -> None:
    result, output = compress(
        [
            {"method": "distill", "studentLayers": 1, "fineTuneEpochs": 1},
            {"method": "headPrune", "headsToPrune": 1},
            {"method": "quantize", "backend": "onnxruntime", "granularity": "perTensor"},
        ]
    )
    assert result.succeeded, result.message
    manifest = manifest_of(output)
    assert manifest.format == "onnx"
    assert manifest.lineage.recipe == [
        "distill(studentLayers=1,T=2,alpha=0.5,epochs=1)",
        "headPrune(heads=1)",
        "onnxExport(opset=17)",
        "quantize(perTensor,onnxruntime)",
    ]
    # Pruned heads are baked into the graph: no load step is needed for ONNX.
    assert manifest.measurements["onnxExport"]["fused"] == {}
