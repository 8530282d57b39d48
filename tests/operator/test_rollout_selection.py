"""Model selection for a BertDeployment: fixed ref, latest, latestPassing, bestMetric and
the format filter, over BertModel bodies as kopf lists them (table-driven); and a model
retrained for one deployment is selected by that deployment only, unless shared."""

from __future__ import annotations

from typing import Any

import pytest

from bertops.api.deployment import ModelChoice
from bertops.operator.rollout.selection import select, select_model
from tests.operator.rollout_builders import model_body as m


def choice(**selector: Any) -> ModelChoice:
    if "ref" in selector:
        return ModelChoice.model_validate({"ref": {"name": selector["ref"]}})
    return ModelChoice.model_validate({"selector": {"family": "sentiment", **selector}})


MIXED = [
    m("v1", 0, f1=0.80),
    m("v2", 10, f1=0.90),
    m("v3", 20, f1=0.70),  # newest Ready, but weaker
    m("v4", 30, ready=False),  # newer still, not Ready
    m("v5", 40, deleting=True),  # being deleted
    m("other", 50, family="spam", f1=0.99),  # another family
]
CASES: list[tuple[str, ModelChoice, list[dict[str, Any]], str | None]] = [
    ("ref to a Ready model", choice(ref="v1"), MIXED, "v1"),
    ("ref to a model not Ready yet", choice(ref="v4"), MIXED, None),
    ("ref to a missing model", choice(ref="nope"), MIXED, None),
    ("latest: newest Ready of the family", choice(policy="latest"), MIXED, "v3"),
    ("latest ignores minMacroF1", choice(policy="latest", minMacroF1=0.85), MIXED, "v3"),
    ("latestPassing without a floor is the newest", choice(), MIXED, "v3"),
    ("latestPassing skips models under the floor", choice(minMacroF1=0.75), MIXED, "v2"),
    ("latestPassing: nobody passes", choice(minMacroF1=0.95), MIXED, None),
    ("bestMetric macroF1", choice(policy="bestMetric"), MIXED, "v2"),
    (
        "bestMetric accuracy",
        choice(policy="bestMetric", metric="accuracy"),
        [m("a", 0, accuracy=0.9), m("b", 5, accuracy=0.8)],
        "a",
    ),
    (
        "bestMetric ties go to the newest",
        choice(policy="bestMetric"),
        [m("old", 0, f1=0.9), m("new", 5, f1=0.9), m("mid", 3, f1=0.9)],
        "new",
    ),
    (
        "bestMetric skips models without the metric",
        choice(policy="bestMetric"),
        [m("scored", 0, f1=0.5), m("unscored", 5, f1=None)],
        "scored",
    ),
    (
        "format onnx",
        choice(policy="latest", format="onnx"),
        [m("fp32", 10), m("int8", 5, fmt="onnx")],
        "int8",
    ),
    (
        "format safetensors",
        choice(policy="latest", format="safetensors"),
        [m("fp32", 0), m("int8", 5, fmt="onnx")],
        "fp32",
    ),
    (
        "family from the label when spec.family is unset",
        choice(policy="latest"),
        [
            m("labelled", 0, family=None, labels={"bertops.io/family": "sentiment"}),
            m("unlabelled", 5, family=None),
        ],
        "labelled",
    ),
    (
        "a compressed variant inherits its parent's family",
        choice(policy="latest", format="onnx"),
        [m("teacher", 0), m("student", 5, family=None, parent="teacher", fmt="onnx")],
        "student",
    ),
    ("no models at all", choice(), [], None),
    (
        "a body this version cannot parse is skipped",
        choice(policy="latest"),
        [m("good", 0), {"metadata": {"name": "bad"}, "spec": {"bogus": 1}}],
        "good",
    ),
    (
        "same second: the name breaks the tie",
        choice(policy="latest"),
        [m("b", 0), m("a", 0)],
        "b",
    ),
]


@pytest.mark.parametrize(
    ("model_choice", "models", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_select_model(
    model_choice: ModelChoice, models: list[dict[str, Any]], expected: str | None
) -> None:
    assert select_model(model_choice, models) == expected


def test_no_match_says_why() -> None:
    found = select(choice(minMacroF1=0.95, format="onnx"), MIXED)
    assert found.name is None
    assert "family sentiment" in found.message and "macroF1 >= 0.95" in found.message
    assert "not Ready" in select(choice(ref="v4"), MIXED).message
    assert "not found" in select(choice(ref="x"), MIXED).message


def test_parsed_models_work_too() -> None:
    from bertops.api.model import BertModel

    parsed = [BertModel.model_validate(body) for body in MIXED]
    assert select_model(choice(policy="bestMetric"), parsed) == "v2"


FOOD = {"bertops.io/retrained-for": "food"}
FOOD_SHARED = {**FOOD, "bertops.io/shared-with-family": "true"}
RETRAINED = [m("sentiment-v1", 0), m("food-retrain-1", 10, labels=FOOD)]
OWNED: list[tuple[str, ModelChoice, list[dict[str, Any]], str | None, str | None]] = [
    # (case, choice, models, deployment, expected)
    (
        "another deployment's retrained model is skipped",
        choice(),
        RETRAINED,
        "sentiment",
        "sentiment-v1",
    ),
    (
        "the deployment it was retrained for selects it",
        choice(),
        RETRAINED,
        "food",
        "food-retrain-1",
    ),
    (
        "shared with the family: everyone may select it",
        choice(),
        [m("sentiment-v1", 0), m("food-retrain-1", 10, labels=FOOD_SHARED)],
        "sentiment",
        "food-retrain-1",
    ),
    (
        "bestMetric skips it too, however good",
        choice(policy="bestMetric"),
        [m("sentiment-v1", 0, f1=0.7), m("food-retrain-1", 10, labels=FOOD, f1=0.99)],
        "sentiment",
        "sentiment-v1",
    ),
    (
        "a compressed variant inherits the label",
        choice(policy="latest", format="onnx"),
        [
            m("sentiment-v1", 0, fmt="onnx"),
            m("food-retrain-1", 10, labels=FOOD),
            m("food-int8", 20, family=None, parent="food-retrain-1", fmt="onnx"),
        ],
        "sentiment",
        "sentiment-v1",
    ),
    (
        "a caller that names no deployment skips nothing",
        choice(),
        RETRAINED,
        None,
        "food-retrain-1",
    ),
    (
        "model.ref is an explicit choice",
        choice(ref="food-retrain-1"),
        RETRAINED,
        "sentiment",
        "food-retrain-1",
    ),
    (
        "only retrained models of others: nothing",
        choice(),
        [m("food-retrain-1", 10, labels=FOOD)],
        "sentiment",
        None,
    ),
]


@pytest.mark.parametrize(
    ("model_choice", "models", "deployment", "expected"),
    [case[1:] for case in OWNED],
    ids=[case[0] for case in OWNED],
)
def test_retrained_models_belong_to_their_deployment(
    model_choice: ModelChoice,
    models: list[dict[str, Any]],
    deployment: str | None,
    expected: str | None,
) -> None:
    assert select_model(model_choice, models, deployment=deployment) == expected


def test_no_match_says_models_were_retrained_for_another_deployment() -> None:
    found = select(choice(), [m("food-retrain-1", 10, labels=FOOD)], deployment="sentiment")
    assert found.name is None
    assert "skipped 1 retrained for another deployment (food-retrain-1" in found.message
    assert "retrain.shareWithFamily" in found.message
    plain = select(choice(minMacroF1=0.95), MIXED, deployment="sentiment")
    assert "retrained" not in plain.message
