"""Step contract helpers: the compact result that fits a termination message."""

from __future__ import annotations

import json

from bertops.api.steps import TERMINATION_MESSAGE_LIMIT, StepResult


def test_small_result_is_kept_whole() -> None:
    result = StepResult(kind="prepare", name="p", succeeded=True, details={"rows": {"total": 3}})
    assert json.loads(result.compact_json())["details"] == {"rows": {"total": 3}}


def test_large_details_are_dropped_largest_first() -> None:
    result = StepResult(
        kind="train",
        name="t",
        succeeded=True,
        metrics={"test.accuracy": 0.8},
        details={"history": ["x" * 100] * 100, "testMetrics": {"accuracy": 0.8}, "modelName": "m"},
    )
    compact = result.compact_json()
    assert len(compact.encode()) <= TERMINATION_MESSAGE_LIMIT
    doc = json.loads(compact)
    assert "history" not in doc["details"]
    assert doc["details"]["testMetrics"] == {"accuracy": 0.8} and doc["details"]["modelName"] == "m"
    assert doc["metrics"] == {"test.accuracy": 0.8}
    assert StepResult.model_validate(doc).succeeded


def test_long_message_is_shortened_to_fit() -> None:
    result = StepResult(
        kind="train", name="t", succeeded=False, exit_code=1, message="Traceback " * 2000
    )
    compact = result.compact_json(limit=1000)
    assert len(compact.encode()) <= 1000
    assert json.loads(compact)["message"].startswith("Traceback")
