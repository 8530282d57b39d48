"""One table of manifests that break a validation rule, with the message a person sees.

Read by tests/api/test_rules.py (pydantic must refuse each with the same message) and by
tests/integration/test_crds_apiserver.py (the real API server must refuse each with it),
so the CEL rules and their Python twins are proven to agree.
"""

from __future__ import annotations

from typing import Any

from tests.integration import manifests as m


def _steps(*steps: dict[str, Any]) -> dict[str, Any]:
    return m.with_path(m.model(), "spec.compression.steps", list(steps))


QUANTIZE = {"method": "quantize"}
ONNX = {"method": "onnxExport"}
PRUNE = {"method": "magnitudePrune", "sparsity": 0.5}
HEADS = {"method": "headPrune", "headsToPrune": 1}
DISTILL = {"method": "distill", "studentLayers": 1}

RULE_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "split not summing to 1",
        m.with_path(m.dataset(), "spec.split.test", 0.3),
        "split ratios train + validation + test must sum to 1",
    ),
    (
        "minChars above maxChars",
        m.with_path(m.dataset(), "spec.cleaning", {"minChars": 50, "maxChars": 10}),
        "minChars must be <= maxChars",
    ),
    (
        "a holdout of a text folder",
        m.with_path(
            m.dataset(),
            "spec.source",
            {"uri": "/data/reviews", "format": "textFolder", "holdoutFraction": 0.2},
        ),
        "holdoutFraction needs a table source with a time column, not a textFolder",
    ),
    (
        "two tokenizers",
        m.with_path(m.dataset(), "spec.tokenizer.trainWordPiece", {"vocabSize": 1000}),
        "set exactly one of tokenizer.baseModel or tokenizer.trainWordPiece",
    ),
    (
        "two model sources",
        m.with_path(m.training(), "spec.baseModel", {"package": "x", "path": "/y"}),
        "set exactly one of path, package or config",
    ),
    (
        "model ref and selector",
        m.with_path(
            m.deployment(), "spec.model", {"ref": {"name": "a"}, "selector": {"family": "b"}}
        ),
        "set exactly one of model.ref or model.selector",
    ),
    (
        "canary weights decreasing",
        m.with_path(m.deployment(), "spec.rollout.steps", [{"weight": 50}, {"weight": 10}]),
        "canary weights must strictly increase from step to step",
    ),
    (
        "canary weights repeated",
        m.with_path(m.deployment(), "spec.rollout.steps", [{"weight": 20}, {"weight": 20}]),
        "canary weights must strictly increase from step to step",
    ),
    (
        "model with two origins",
        m.with_path(m.model(), "spec.artifactUri", "s3://bucket/model"),
        "set exactly one of trainingRef, artifactUri or compression",
    ),
    (
        "prune without sparsity",
        _steps({"method": "magnitudePrune"}),
        "magnitudePrune needs sparsity",
    ),
    ("headPrune without heads", _steps({"method": "headPrune"}), "headPrune needs headsToPrune"),
    (
        "setting of another method",
        _steps({"method": "quantize", "sparsity": 0.5}),
        "sparsity only applies to method magnitudePrune",
    ),
    (
        "fine-tune after quantize",
        _steps({"method": "quantize", "fineTuneEpochs": 1}),
        "fineTuneEpochs does not apply to quantize or onnxExport",
    ),
    ("quantize not last", _steps(QUANTIZE, PRUNE), "nothing can follow quantize"),
    ("two quantize steps", _steps(QUANTIZE, QUANTIZE), "nothing can follow quantize"),
    ("two exports", _steps(ONNX, ONNX), "onnxExport may appear only once"),
    ("prune after export", _steps(ONNX, HEADS), "they must come before onnxExport"),
    ("distill after export", _steps(PRUNE, ONNX, DISTILL), "they must come before onnxExport"),
    ("distill after headPrune", _steps(HEADS, DISTILL), "distill must come before headPrune"),
    (
        "torch quantize of an export",
        _steps(ONNX, {"method": "quantize", "backend": "torch"}),
        "an exported ONNX model is quantized with backend onnxruntime, not torch",
    ),
]

# Fractional bounds: the API server compares an integer value with the bound cut to an
# integer, so these need a CEL rule that states the real range.
BOUND_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "learning rate 5",
        m.with_path(m.training(), "spec.hyperparameters.learningRate", 5),
        "learningRate must be between 1e-06 and 0.001",
    ),
    (
        "learning rate 0",
        m.with_path(m.training(), "spec.hyperparameters.learningRate", 0),
        "learningRate must be between 1e-06 and 0.001",
    ),
    (
        "learning rate 0.5",
        m.with_path(m.training(), "spec.hyperparameters.learningRate", 0.5),
        "learningRate must be between 1e-06 and 0.001",
    ),
    (
        "learning rate too low",
        m.with_path(m.training(), "spec.hyperparameters.learningRate", 1e-9),
        "learningRate must be between 1e-06 and 0.001",
    ),
    (
        "warmup ratio 1",
        m.with_path(m.training(), "spec.hyperparameters.warmupRatio", 1),
        "warmupRatio must be between 0 and 0.5",
    ),
]

VALID_RECIPES: list[list[dict[str, Any]]] = [
    [DISTILL, HEADS, PRUNE, ONNX, QUANTIZE],
    [PRUNE, {"method": "quantize", "backend": "torch"}],
    [DISTILL, DISTILL, {"method": "magnitudePrune", "sparsity": 0.3, "fineTuneEpochs": 1}],
    [ONNX],
]
