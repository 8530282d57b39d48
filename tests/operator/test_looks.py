"""When the poller looks at an object again, from what its reconcile planned: never for a
settled dataset, training or model; at the next poll while something runs or was just
started; a deployment when its own schedule says."""

from __future__ import annotations

from typing import Any

import pytest

from bertops.operator.looks import next_look
from bertops.operator.objects import Plan
from tests.operator.builders import condition, dataset


def body(status: dict[str, Any] | None) -> dict[str, Any]:
    found = dataset(status).model_dump(mode="json", by_alias=True, exclude_none=True)
    found["metadata"] = {"name": "d", "namespace": "ns", "generation": 1, "uid": "u"}
    return found


PREPARED = {
    "observedGeneration": 1,
    "conditions": [condition("Ready", "True", "Prepared").to_wire()],
}
PREPARING = {
    "observedGeneration": 1,
    "conditions": [condition("Ready", "False", "Preparing").to_wire()],
}


@pytest.mark.parametrize(
    ("case", "kind", "status", "plan", "expected"),
    [
        ("settled dataset: never", "BertDataset", PREPARED, Plan(), None),
        ("a step runs: next poll", "BertDataset", PREPARING, Plan(), 2.0),
        ("new object: next poll", "BertDataset", None, Plan(), 2.0),
        ("just settled by this plan", "BertDataset", PREPARING, Plan(status=PREPARED), None),
        ("a step was just started", "BertDataset", PREPARED, Plan(stop=["old-step"]), 2.0),
        ("deployment: its schedule", "BertDeployment", None, Plan(), 17.0),
    ],
)
def test_next_look(
    case: str, kind: str, status: dict[str, Any] | None, plan: Plan, expected: float | None
) -> None:
    the_body = body(status)
    the_body["kind"] = kind
    assert next_look(kind, the_body, plan, 2.0, lambda ns, name: 17.0) == expected, case
