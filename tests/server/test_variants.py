"""The load-time recipe and the ONNX variant: a quantizeDynamic step (torch INT8, per
tensor and per channel), an ONNX export run by onnxruntime, and an ONNX model quantized
at load time, each giving predictions close to the FP32 model's."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertops.api.artifacts import LoadStep
from bertops.server.artifact import ArtifactError
from bertops.server.model import ServedModel, TorchClassifier
from tests.server.artifacts import write_manifest, write_tiny_artifact, write_tiny_onnx_artifact

TEXTS = [
    "a short one",
    "a rather longer text that needs more tokens than the others do",
    "",
    "mixed CASE and punctuation!!",
]


def probabilities(model: ServedModel) -> list[float]:
    """Every class probability of every text, flattened (pytest.approx wants flat)."""
    model.load()
    return [value for p in model.predict(TEXTS) for value in p.probabilities]


@pytest.fixture(scope="module")
def fp32(tiny_artifact: Path) -> list[float]:
    return probabilities(ServedModel(str(tiny_artifact), threads=1))


@pytest.mark.parametrize("granularity", ["perTensor", "perChannel"])
def test_quantize_dynamic_recipe(tmp_path: Path, granularity: str, fp32: list[float]) -> None:
    recipe = [
        LoadStep(op="quantizeDynamic", params={"granularity": granularity, "backend": "torch"})
    ]
    folder = write_tiny_artifact(tmp_path / "int8", name="tiny-int8", recipe=recipe)
    model = ServedModel(str(folder), threads=1)
    got = probabilities(model)
    assert isinstance(model.classifier, TorchClassifier)
    head = repr(model.classifier.model.classifier)
    assert head.startswith("DynamicQuantizedLinear")
    assert ("per_channel" in head) == (granularity == "perChannel")
    assert got == pytest.approx(fp32, abs=0.02)


def test_unknown_recipe_step_is_refused(tmp_path: Path) -> None:
    folder = write_tiny_artifact(tmp_path / "odd")
    write_manifest(folder, "odd", recipe=[LoadStep(op="prune", params={})])
    with pytest.raises(ArtifactError, match="unsupported load step 'prune'"):
        ServedModel(str(folder), threads=1).load()


def test_onnx_variant_matches_fp32(tmp_path: Path, fp32: list[float]) -> None:
    pytest.importorskip("onnx")  # torch.onnx.export needs it to write the test's export
    pytest.importorskip("onnxruntime")
    folder = write_tiny_onnx_artifact(tmp_path / "onnx")
    model = ServedModel(str(folder), threads=1)
    assert probabilities(model) == pytest.approx(fp32, abs=1e-4)
    # The same export, quantized by onnxruntime when loaded.
    write_manifest(
        folder,
        "tiny-onnx-int8",
        fmt="onnx",
        recipe=[LoadStep(op="quantizeDynamic", params={"granularity": "perChannel"})],
    )
    assert probabilities(ServedModel(str(folder), threads=1)) == pytest.approx(fp32, abs=0.02)
