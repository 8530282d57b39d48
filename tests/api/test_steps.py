"""Step contract helpers: typed per-kind details and the compact result that fits a
termination message."""

from __future__ import annotations

import json
from typing import Any, get_args

import pytest
from pydantic import TypeAdapter, ValidationError

from bertops.api.steps import (
    STEP_KINDS,
    TERMINATION_MESSAGE_LIMIT,
    ChallengeDetails,
    ChallengeStep,
    CompressDetails,
    EvaluateDetails,
    PrepareDetails,
    StepResult,
    StepSpec,
    TrainDetails,
)


def test_small_result_is_kept_whole() -> None:
    result = StepResult(kind="prepare", name="p", succeeded=True, details={"rows": {"total": 3}})
    doc = json.loads(result.compact_json())
    assert doc["details"] == {"kind": "prepare", "rows": {"total": 3}}


@pytest.mark.parametrize(
    ("kind", "details", "model", "field", "value"),
    [
        ("prepare", {"checksum": "ab", "numLabels": 2}, PrepareDetails, "num_labels", 2),
        ("train", {"modelName": "m", "epochsRun": 3}, TrainDetails, "epochs_run", 3),
        ("evaluate", {"metrics": {"accuracy": 0.9}}, EvaluateDetails, "metrics", {"accuracy": 0.9}),
        (
            "compress",
            {"qualityDelta": {"macroF1": -0.1}},
            CompressDetails,
            "quality_delta",
            {"macroF1": -0.1},
        ),
        (
            "challenge",
            {"reportUri": "/r/report.json", "sets": [{"set": "testSplit", "rows": 0}]},
            ChallengeDetails,
            "report_uri",
            "/r/report.json",
        ),
    ],
)
def test_details_are_typed_by_the_result_kind(
    kind: str, details: dict[str, Any], model: type, field: str, value: Any
) -> None:
    """The discriminator is the result's kind, so a document without details.kind (an
    older step) parses as the right model, and a round trip keeps it."""
    result = StepResult.model_validate(
        {"kind": kind, "name": "s", "succeeded": True, "details": details}
    )
    assert isinstance(result.details, model)
    assert getattr(result.details, field) == value
    again = StepResult.model_validate_json(result.compact_json())
    assert again.details == result.details


def test_details_of_another_kind_are_refused() -> None:
    with pytest.raises(ValidationError, match="details of kind prepare in a train result"):
        StepResult(kind="train", name="t", succeeded=True, details=PrepareDetails())


def test_wrongly_typed_details_are_refused() -> None:
    with pytest.raises(ValidationError, match="epochsRun"):
        StepResult.model_validate(
            {"kind": "train", "name": "t", "succeeded": True, "details": {"epochsRun": "three"}}
        )


def test_unknown_detail_keys_are_kept_and_named() -> None:
    """Kept (a newer trainer may add fields; refusing would fail a finished step) and
    named, so the operator can warn instead of dropping them silently."""
    result = StepResult.model_validate(
        {
            "kind": "train",
            "name": "t",
            "succeeded": True,
            "details": {"modelName": "m", "gradNormP99": 3.5},
        }
    )
    assert result.details is not None and result.details.unknown_keys == ["gradNormP99"]
    assert json.loads(result.compact_json())["details"]["gradNormP99"] == 3.5


def test_large_details_are_dropped_largest_first() -> None:
    result = StepResult(
        kind="train",
        name="t",
        succeeded=True,
        metrics={"test.accuracy": 0.8},
        details={
            "history": [{"epoch": n, "note": "x" * 100} for n in range(100)],
            "rankWeightDigests": ["f" * 64] * 8,
            "testMetrics": {"accuracy": 0.8},
            "modelName": "m",
        },
    )
    compact = result.compact_json()
    assert len(compact.encode()) <= TERMINATION_MESSAGE_LIMIT
    doc = json.loads(compact)
    assert "history" not in doc["details"]
    assert doc["details"]["testMetrics"] == {"accuracy": 0.8} and doc["details"]["modelName"] == "m"
    assert doc["details"]["kind"] == "train"
    assert doc["metrics"] == {"test.accuracy": 0.8}
    assert StepResult.model_validate(doc).succeeded


def test_long_message_is_shortened_to_fit() -> None:
    result = StepResult(
        kind="train", name="t", succeeded=False, exit_code=1, message="Traceback " * 2000
    )
    compact = result.compact_json(limit=1000)
    assert len(compact.encode()) <= 1000
    assert json.loads(compact)["message"].startswith("Traceback")


def test_fields_the_operator_reads_are_dropped_last() -> None:
    """Under a tight limit the essential fields outlive larger optional ones."""
    result = StepResult(
        kind="train",
        name="t",
        succeeded=True,
        details=TrainDetails(
            model_name="m",
            test_metrics={"accuracy": 0.8, "macroF1": 0.7},
            artifact_uri="/store/" + "a" * 300,
            rank_weight_digests=["f" * 64] * 3,
            device="cpu",
        ),
    )
    doc = json.loads(result.compact_json(limit=560))
    assert set(doc["details"]) >= {"kind", "modelName", "testMetrics", "artifactUri"}
    assert "rankWeightDigests" not in doc["details"]
    assert isinstance(StepResult.model_validate(doc).details, TrainDetails)


def test_every_step_kind_is_a_spec_and_a_result_kind() -> None:
    """One list of kinds: the spec union, the result's kind and STEP_KINDS agree."""
    spec_kinds = {model.model_fields["kind"].default for model in get_args(StepSpec)}
    result_kinds = set(get_args(StepResult.model_fields["kind"].annotation))
    assert spec_kinds == result_kinds == set(STEP_KINDS)


def test_challenge_step_on_the_wire() -> None:
    spec = TypeAdapter(StepSpec).validate_python(
        {
            "kind": "challenge",
            "name": "c",
            "stableModelUri": "/m/stable",
            "candidateModelUri": "/m/candidate",
            "testUri": "/d/stable-dataset",
            "holdoutUri": "/d/retraining/holdout.parquet",
            "outputUri": "/out",
        }
    )
    assert isinstance(spec, ChallengeStep)
    assert spec.max_rows == 2000 and spec.holdout_uri == "/d/retraining/holdout.parquet"
    with pytest.raises(ValidationError, match="maxRows"):
        ChallengeStep.model_validate({**spec.to_wire(), "maxRows": 0})


def test_challenge_sets_keep_their_paired_counts() -> None:
    details = {
        "sets": [
            {
                "set": "heldBackFeedback",
                "rows": 10,
                "stableAccuracy": 0.6,
                "candidateAccuracy": 0.8,
                "bothCorrect": 5,
                "candidateOnly": 3,
                "stableOnly": 1,
                "bothWrong": 1,
            }
        ]
    }
    result = StepResult.model_validate(
        {"kind": "challenge", "name": "c", "succeeded": True, "details": details}
    )
    assert isinstance(result.details, ChallengeDetails) and result.details.sets
    entry = result.details.sets[0]
    assert (entry.candidate_only, entry.stable_only) == (3, 1)
    assert json.loads(result.compact_json())["details"]["sets"] == details["sets"]
    with pytest.raises(ValidationError, match="set"):
        StepResult.model_validate(
            {"kind": "challenge", "name": "c", "succeeded": True, "details": {"sets": [{}]}}
        )
