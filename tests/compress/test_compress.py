"""The compress step on a tiny trained BERT: every method changes what it should, a
quantized model stays close to its parent, the gate refuses a destroyed model, and an
impossible recipe is refused before any work starts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from bertops.api.artifacts import MODEL_MANIFEST, ModelManifest, verify_folder
from bertops.api.model import REASON_GATE_FAILED
from bertops.api.steps import CompressStep
from tests.compress.conftest import compress_spec


def manifest_of(folder: Path) -> ModelManifest:
    manifest = ModelManifest.model_validate_json((folder / MODEL_MANIFEST).read_text())
    assert verify_folder(folder, manifest.files) == []
    return manifest


def _logits(model: Any, prepared: Path) -> torch.Tensor:
    from bertops.trainer import prepare
    from bertops.trainer.evaluate import collate

    rows = [list(map(int, r)) for r in prepare.read_split(prepared, "test")["input_ids"]][:32]
    batch = collate(rows, 0, torch.device("cpu"))
    with torch.no_grad():
        return torch.as_tensor(model(**batch).logits).float()


def _load(folder: Path) -> Any:
    from bertops.trainer.compress import artifact

    return artifact.load_any(folder, manifest_of(folder))


def _parent(trained: tuple[Path, Any]) -> Any:
    return _load(trained[0])


# --- refused before any work ------------------------------------------------------------


# Rules that hold whatever the parent is are API rules (CEL + pydantic, bertops.api.model):
# the step spec does not even parse.
@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (
            [
                {"method": "quantize", "backend": "torch"},
                {"method": "magnitudePrune", "sparsity": 0.5},
            ],
            "nothing can follow quantize",
        ),
        (
            [{"method": "onnxExport"}, {"method": "headPrune", "headsToPrune": 1}],
            "must come before onnxExport",
        ),
        (
            [{"method": "onnxExport"}, {"method": "quantize", "backend": "torch"}],
            "quantized with backend onnxruntime",
        ),
        (
            [{"method": "headPrune", "headsToPrune": 1}, {"method": "distill", "studentLayers": 1}],
            "distill must come before headPrune",
        ),
        (
            [{"method": "quantize", "sparsity": 0.5}],
            "sparsity only applies to method magnitudePrune",
        ),
        ([{"method": "magnitudePrune"}], "magnitudePrune needs sparsity"),
        ([{"method": "headPrune"}], "headPrune needs headsToPrune"),
    ],
)
def test_recipe_breaking_an_api_rule_fails_parsing(
    steps: list[dict[str, Any]], expected: str, tmp_path: Path
) -> None:
    from bertops.trainer.errors import BadInputError
    from bertops.trainer.steps import parse_spec

    spec = compress_spec(tmp_path, tmp_path, tmp_path / "out", steps)
    with pytest.raises(BadInputError, match=expected):
        parse_spec(spec)


# Rules that depend on the parent (its heads and layers) are the recipe planner's.
@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([{"method": "headPrune", "headsToPrune": 3}], "at most 2 can be removed"),
        ([{"method": "distill", "studentLayers": 2}], "studentLayers must be between 1 and 1"),
    ],
)
def test_impossible_recipe_is_refused_before_work(
    steps: list[dict[str, Any]],
    expected: str,
    trained: tuple[Path, Any],
    prepared: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bertops.trainer.compress import artifact, run_compress
    from bertops.trainer.errors import BadInputError
    from bertops.trainer.progress import Progress

    def no_loading(*_: Any, **__: Any) -> Any:
        raise AssertionError("weights were loaded before the recipe was validated")

    monkeypatch.setattr(artifact, "load_torch", no_loading)
    spec = CompressStep.model_validate(compress_spec(trained[0], prepared, tmp_path / "out", steps))
    started = time.monotonic()
    with pytest.raises(BadInputError, match=expected) as error:
        run_compress(spec, Progress(bar=False))
    assert error.value.exit_code == 2
    # Generous on purpose: it only has to tell a refusal (no weights loaded, see
    # no_loading above) from a compression run (minutes), also on a loaded 2-core machine.
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "step",
    [
        {"method": "lowRankFactorize"},
        {"method": "magnitudePrune", "sparsity": 1.5},
        {"method": "headPrune", "headsToPrune": 0},
    ],
)
def test_unknown_method_or_target_fails_parsing(step: dict[str, Any], tmp_path: Path) -> None:
    from bertops.trainer.errors import BadInputError
    from bertops.trainer.steps import parse_spec

    spec = compress_spec(tmp_path, tmp_path, tmp_path / "out", [step])
    with pytest.raises(BadInputError, match="invalid step spec"):
        parse_spec(spec)


def test_plan_refuses_an_unknown_method_that_bypassed_validation(trained: tuple[Path, Any]) -> None:
    from bertops.api.model import Compression, CompressionStep
    from bertops.trainer.compress import recipe
    from bertops.trainer.errors import BadInputError

    manifest = manifest_of(trained[0])
    config = json.loads((trained[0] / "config.json").read_text())
    bogus = CompressionStep.model_construct(method="lowRank", fine_tune_epochs=0)
    compression = Compression.model_construct(steps=[bogus])
    with pytest.raises(BadInputError, match="unknown method"):
        recipe.plan(compression, manifest, config, train_rows=10)


# --- each method ------------------------------------------------------------------------


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


# --- the gate ---------------------------------------------------------------------------


def test_gate_rejects_a_destroyed_model_and_leaves_no_artifact(compress: Any) -> None:
    result, output = compress(
        [{"method": "magnitudePrune", "sparsity": 0.99}],
        gate={"maxAccuracyDrop": 0.01, "maxF1Drop": 0.01},
    )
    assert not result.succeeded
    assert result.exit_code == 2
    assert result.reason == REASON_GATE_FAILED
    assert "dropped" in result.message and "->" in result.message
    assert (
        result.details.quality_delta["macroF1"] < -0.01
        or result.details.quality_delta["accuracy"] < -0.01
    )
    assert not output.exists()
    assert not any(p.name.startswith(f".{output.name}") for p in output.parent.iterdir())


@pytest.mark.slow
def test_subprocess_runs_a_compress_step(
    trained: tuple[Path, Any], prepared: Path, tmp_path: Path
) -> None:
    """The entry point as a separate process (how a runtime starts it)."""
    import subprocess
    import sys

    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            compress_spec(
                trained[0],
                prepared,
                tmp_path / "out",
                [{"method": "magnitudePrune", "sparsity": 0.3}],
            )
        )
    )
    code = (
        "import sys, json; from bertops.api.steps import CompressStep; "
        "from bertops.trainer.compress import run_compress; "
        "from bertops.trainer.progress import Progress; "
        f"r = run_compress(CompressStep.model_validate_json(open({str(spec)!r}).read()), "
        "Progress(bar=False)); print(r.model_dump_json(by_alias=True)); "
        "sys.exit(r.exit_code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["kind"] == "compress" and result["artifacts"]["model"] == str(tmp_path / "out")
    events = [json.loads(line)["event"] for line in done.stdout.strip().splitlines()[:-1]]
    assert events[0] == "start" and events[-1] == "done"


def test_model_server_serves_compressed_variants_like_the_trainer_scores_them(
    compress: Any, tmp_path: Path
) -> None:
    """Across components: the server rebuilds a head-pruned model and applies an INT8
    load step, and its answers match what compress measured with the trainer's loader."""
    import torch

    from bertops.server.model import ServedModel
    from bertops.trainer.compress.artifact import load_torch

    texts = ["i love this so much", "worst day ever, everything broke", "the bus is at 5pm"]
    for steps in (
        [{"method": "headPrune", "headsToPrune": 2}],
        [{"method": "quantize", "backend": "torch", "granularity": "perChannel"}],
    ):
        result, output = compress(steps)
        assert result.succeeded, result.message
        served = ServedModel(str(output), threads=1)
        served.load()
        answers = served.predict(texts)
        reference = load_torch(output, manifest_of(output))
        tokenizer_out = served.classifier.tokenizer(  # type: ignore[attr-defined]
            texts, padding=True, truncation=True, return_tensors="pt"
        )
        with torch.inference_mode():
            expected = torch.softmax(reference(**tokenizer_out).logits, dim=-1)
        labels = manifest_of(output).labels
        assert [a.label for a in answers] == [labels[i] for i in expected.argmax(-1).tolist()]
