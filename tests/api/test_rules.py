"""The CEL rules and their Python twins: pydantic refuses what the API server refuses,
with the same message, and no CEL rule in a generated CRD lacks a twin."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bertops.api import crdgen
from bertops.api.kinds import KINDS, kind_info
from bertops.api.meta import _RULES
from bertops.api.model import Compression
from tests.api.rule_cases import BOUND_CASES, RULE_CASES, VALID_RECIPES
from tests.integration import manifests as m


def parse_spec(manifest: dict[str, Any]) -> Any:
    return kind_info(manifest["kind"]).spec_model.model_validate(manifest["spec"])


@pytest.mark.parametrize(("case", "body", "message"), RULE_CASES, ids=[c[0] for c in RULE_CASES])
def test_pydantic_enforces_each_cel_rule(case: str, body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_spec(body)
    assert message in str(refused.value), case


@pytest.mark.parametrize(("case", "body", "message"), BOUND_CASES, ids=[c[0] for c in BOUND_CASES])
def test_pydantic_enforces_fractional_bounds(case: str, body: dict[str, Any], message: str) -> None:
    field = message.split(maxsplit=1)[0]
    with pytest.raises(ValidationError, match=field):
        parse_spec(body)


@pytest.mark.parametrize("builder", [m.dataset, m.training, m.model, m.deployment])
def test_valid_examples_parse(builder: Any) -> None:
    parse_spec(builder())


@pytest.mark.parametrize("steps", VALID_RECIPES, ids=lambda s: "-".join(x["method"] for x in s))
def test_valid_recipes_parse(steps: list[dict[str, Any]]) -> None:
    Compression.model_validate({"parentRef": {"name": "p"}, "steps": steps})


def _cel_rules(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found += node.get("x-kubernetes-validations", [])
        for value in node.values():
            found += _cel_rules(value)
    elif isinstance(node, list):
        for value in node:
            found += _cel_rules(value)
    return found


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.kind)
def test_every_cel_rule_has_a_python_twin(info: Any) -> None:
    """A rule without one would hold at `kubectl apply` but not for a step spec or a
    parsed object. Exempt: transition rules (oldSelf: only the API server has the old
    object), the metadata.name rule (metadata is not a pydantic type) and bounds moved
    into CEL by the generator (pydantic enforces the Field's ge/le itself)."""
    schema = crdgen.crd_for(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for entry in _cel_rules(schema):
        rule = entry["rule"]
        if "oldSelf" in rule or rule == crdgen.NAME_RULE["rule"] or rule.startswith("self >"):
            continue
        assert rule in _RULES and _RULES[rule].check is not None, rule
