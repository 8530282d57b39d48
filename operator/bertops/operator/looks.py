"""When an object needs its next look, from what its reconcile just planned: the poller
(:mod:`bertops.operator.poller`) schedules by this, so settled objects are never polled.

Called by :meth:`bertops.operator.reconcile.Reconciler.poll` after each reconcile. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from bertops.api import dataset as dataset_api
from bertops.api import model as model_api
from bertops.api import training as training_api
from bertops.operator.objects import ObjectRef, Plan
from bertops.operator.planners import dataset as dataset_planner
from bertops.operator.planners import model as model_planner
from bertops.operator.planners import training as training_planner

# Per kind: its API type and the planner's test for a final outcome of this generation
# (then the poller stops looking; only a watch event brings it back).
SETTLED: dict[str, tuple[Any, Callable[[ObjectRef, Any], bool]]] = {
    "BertDataset": (dataset_api.BertDataset, dataset_planner.is_settled),
    "BertTraining": (training_api.BertTraining, training_planner.is_settled),
    "BertModel": (model_api.BertModel, model_planner.is_settled),
}


def next_look(
    kind: str,
    body: dict[str, Any],
    plan: Plan,
    poll_seconds: float,
    deployment_delay: Callable[[str, str], float],
) -> float | None:
    """Seconds until the next look, None for never (until a watch event): a deployment
    when its rollout or drift checks say; anything that started, stopped or created
    something at the next poll; a dataset, training or model never once its planner
    calls it settled, else (a step runs, a dependency is awaited) at the next poll."""
    if kind == "BertDeployment":
        meta = body["metadata"]
        return deployment_delay(meta["namespace"], meta["name"])
    if plan.start or plan.stop or plan.create:
        return poll_seconds
    settled = SETTLED.get(kind)
    if settled is None:
        return poll_seconds
    api_type, is_settled = settled
    status = plan.status if plan.status is not None else body.get("status") or {}
    try:
        parsed = api_type.model_validate({**body, "status": status})
    except ValidationError:
        return poll_seconds
    return None if is_settled(ObjectRef.from_body(body), parsed.status) else poll_seconds
