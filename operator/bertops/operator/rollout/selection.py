"""Which BertModel a BertDeployment should serve: a fixed ``model.ref``, or a selector
over a family with a policy (``latest``, ``latestPassing``, ``bestMetric``) and a format
filter.

Pure: the BertDeployment reconciler lists the namespace's BertModels and calls
:func:`select_model` (or :func:`select` for a message saying why nothing matched); the
state machine in :mod:`bertops.operator.rollout.state` then rolls the answer out.

A model's family is ``spec.family`` (the training planner copies it there and onto the
label ``bertops.io/family``); without either, a compressed variant inherits its parent's
family, so a distilled INT8 model competes with the model it came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from bertops.api.deployment import ModelChoice, ModelSelector
from bertops.api.meta import is_true
from bertops.api.model import READY, BertModel

FAMILY_LABEL = "bertops.io/family"
_EPOCH = datetime.min.replace(tzinfo=UTC)
_MAX_LINEAGE = 16  # parent hops followed to find a family (guards against cycles)


@dataclass(frozen=True)
class Selection:
    name: str | None
    message: str


def parse_models(models: Iterable[BertModel | Mapping[str, Any]]) -> list[BertModel]:
    """BertModel objects from kopf bodies or parsed models; a body this version cannot
    parse is skipped (it cannot be served safely anyway)."""
    parsed = []
    for item in models:
        if isinstance(item, BertModel):
            parsed.append(item)
            continue
        try:
            parsed.append(BertModel.model_validate(dict(item)))
        except ValidationError:
            continue
    return parsed


def name_of(model: BertModel) -> str:
    return str(model.metadata.get("name", ""))


def created_at(model: BertModel) -> datetime:
    value = model.metadata.get("creationTimestamp")
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return _EPOCH
    return _EPOCH


def is_ready(model: BertModel) -> bool:
    """Ready (verified, evaluated, gate passed) and not being deleted."""
    return is_true(model.status.conditions, READY) and not model.metadata.get("deletionTimestamp")


def family_of(model: BertModel, by_name: Mapping[str, BertModel]) -> str | None:
    current: BertModel | None = model
    for _ in range(_MAX_LINEAGE):
        if current is None:
            return None
        if current.spec.family:
            return current.spec.family
        labels = current.metadata.get("labels")
        if isinstance(labels, Mapping) and labels.get(FAMILY_LABEL):
            return str(labels[FAMILY_LABEL])
        parent = current.spec.compression.parent_ref.name if current.spec.compression else None
        current = by_name.get(parent) if parent else None
    return None


def _metric(model: BertModel, metric: str) -> float | None:
    metrics = model.status.metrics
    if metrics is None:
        return None
    value = metrics.macro_f1 if metric == "macroF1" else metrics.accuracy
    return value


def _newest_first(models: Iterable[BertModel]) -> list[BertModel]:
    # Name breaks ties so two models created in the same second always rank the same way.
    return sorted(models, key=lambda m: (created_at(m), name_of(m)), reverse=True)


def _candidates(selector: ModelSelector, models: list[BertModel]) -> list[BertModel]:
    by_name = {name_of(m): m for m in models}
    found = [m for m in models if is_ready(m) and family_of(m, by_name) == selector.family]
    if selector.format != "any":
        found = [m for m in found if m.status.format == selector.format]
    if selector.policy != "latest" and selector.min_macro_f1 is not None:
        floor = selector.min_macro_f1
        found = [m for m in found if (_metric(m, "macroF1") or -1.0) >= floor]
    return found


def _choose(selector: ModelSelector, found: list[BertModel]) -> BertModel | None:
    ranked = _newest_first(found)
    if selector.policy == "bestMetric":
        scored = [m for m in ranked if _metric(m, selector.metric) is not None]
        # max() keeps the first of equal scores, and ranked is newest first.
        return max(scored, key=lambda m: _metric(m, selector.metric) or 0.0, default=None)
    return ranked[0] if ranked else None


def select(choice: ModelChoice, models: Iterable[BertModel | Mapping[str, Any]]) -> Selection:
    """The model to serve and a sentence for the condition message."""
    parsed = parse_models(models)
    if choice.ref is not None:
        wanted = choice.ref.name
        model = next((m for m in parsed if name_of(m) == wanted), None)
        if model is None:
            return Selection(None, f"BertModel {wanted} not found")
        if not is_ready(model):
            return Selection(None, f"BertModel {wanted} is not Ready")
        return Selection(wanted, f"model.ref names {wanted}")
    selector = choice.selector
    assert selector is not None  # the CEL rule: exactly one of ref or selector
    chosen = _choose(selector, _candidates(selector, parsed))
    if chosen is None:
        floor = (
            f", macroF1 >= {selector.min_macro_f1}"
            if selector.min_macro_f1 is not None and selector.policy != "latest"
            else ""
        )
        return Selection(
            None,
            f"no Ready BertModel of family {selector.family} "
            f"(format {selector.format}{floor}) for policy {selector.policy}",
        )
    return Selection(name_of(chosen), f"policy {selector.policy} over family {selector.family}")


def select_model(
    choice: ModelChoice, models: Iterable[BertModel | Mapping[str, Any]]
) -> str | None:
    """The name of the BertModel to serve, or None when nothing qualifies."""
    return select(choice, models).name
