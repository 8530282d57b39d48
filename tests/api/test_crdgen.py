"""The CRD YAML in crds/ is exactly what the generator writes, and it is structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bertops.api import crdgen
from bertops.api.kinds import KINDS

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


def test_committed_crds_match_generator() -> None:
    stale = crdgen.stale(CRD_DIR)
    assert not stale, f"run `bertops crds generate`; stale: {stale}"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _walk(value, f"{path}[{index}]")
    return found


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.kind)
def test_schema_is_structural(info: Any) -> None:
    crd = crdgen.crd_for(info)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node, path
        assert "anyOf" not in node and "oneOf" not in node, path
        if "properties" in node:
            assert node.get("type") == "object", path
            assert "additionalProperties" not in node, path


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.kind)
def test_crd_names_and_columns(info: Any) -> None:
    crd = crdgen.crd_for(info)
    names = crd["spec"]["names"]
    assert names["categories"] == ["bertops"]
    assert names["shortNames"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert "Age" in columns


def test_status_declares_operator_fields() -> None:
    """The API server drops undeclared status fields, so everything the operator writes
    must be in the schema: spot-check the ones the printer columns read."""
    for info in KINDS:
        schema = crdgen.crd_for(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for column in info.columns:
            parts = column.json_path.strip(".").split(".")
            if parts[0] != "status" or "[" in column.json_path:
                continue
            node = schema["properties"]["status"]
            for part in parts[1:]:
                node = node["properties"][part]
            assert node["type"] in ("string", "integer", "number", "boolean"), column


def test_defaults_reach_the_schema() -> None:
    schema = crdgen.openapi_schema(KINDS[1].spec_model)
    hp = schema["properties"]["hyperparameters"]["properties"]
    # Fractional bounds live in CEL (see test_fractional_bounds_become_cel_rules).
    assert hp["learningRate"] == {
        "default": 5e-05,
        "type": "number",
        "x-kubernetes-validations": [
            {
                "rule": "self >= 1e-06 && self <= 0.001",
                "message": "learningRate must be between 1e-06 and 0.001",
            }
        ],
    }
    assert hp["scheduler"]["enum"] == ["linear", "cosine", "constant"]


def test_fractional_bounds_become_cel_rules() -> None:
    """The API server checks an integer value against a bound cut to an integer (0.001
    acts as 0), so no fractional minimum/maximum may stay in the OpenAPI schema: each
    becomes a CEL rule whose message states the real range."""
    for info in KINDS:
        schema = crdgen.crd_for(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            for key in ("minimum", "maximum"):
                if key in node:
                    assert float(node[key]).is_integer(), f"{info.kind}{path}.{key}"
    node = {"type": "number", "minimum": 0, "maximum": 1, "exclusiveMaximum": True}
    assert crdgen._fractional_bounds("x", node) == node  # integral bounds stay
    sparse = crdgen._fractional_bounds(
        "sparsity", {"type": "number", "minimum": 0.05, "exclusiveMinimum": True, "maximum": 1}
    )
    assert sparse["x-kubernetes-validations"] == [
        {
            "rule": "self > 0.05 && self <= 1.0",
            "message": "sparsity must be greater than 0.05 and at most 1",
        }
    ]
