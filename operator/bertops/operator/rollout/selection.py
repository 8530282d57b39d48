"""Which BertModel a BertDeployment should serve: a fixed ``model.ref``, or a selector
over a family with a policy (``latest``, ``latestPassing``, ``bestMetric``) and a format
filter.

Pure: the BertDeployment reconciler lists the namespace's BertModels and calls
:func:`select_model` (or :func:`select` for a message saying why nothing matched); the
state machine in :mod:`bertops.operator.rollout.state` then rolls the answer out.

A model's family is ``spec.family`` (the training planner copies it there and onto the
label ``bertops.io/family``); without either, a compressed variant inherits its parent's
family, so a distilled INT8 model competes with the model it came from.

A model a deployment's retraining registered carries ``bertops.io/retrained-for: <that
deployment>``: it was trained on that deployment's drifted traffic and feedback, so a
selector of another deployment skips it, unless it also carries
``bertops.io/shared-with-family: "true"`` (``retrain.shareWithFamily``). A compressed
variant inherits the label from its parent, as it does the family. Models without the
label (registered by a user's training) are everyone's; a ``model.ref`` naming a model
is an explicit choice and always honoured.
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
from bertops.api.training import RETRAINED_LABEL, SHARED_WITH_FAMILY_LABEL

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


def _labels(model: BertModel) -> Mapping[str, Any]:
    labels = model.metadata.get("labels")
    return labels if isinstance(labels, Mapping) else {}


def _parent(model: BertModel, by_name: Mapping[str, BertModel]) -> BertModel | None:
    parent = model.spec.compression.parent_ref.name if model.spec.compression else None
    return by_name.get(parent) if parent else None


def retrained_for(model: BertModel, by_name: Mapping[str, BertModel]) -> str | None:
    """The deployment whose retraining registered the model (or its nearest ancestor),
    unless it is shared with the family; None: any deployment of the family may select it."""
    current: BertModel | None = model
    for _ in range(_MAX_LINEAGE):
        if current is None:
            return None
        labels = _labels(current)
        if labels.get(RETRAINED_LABEL):
            shared = str(labels.get(SHARED_WITH_FAMILY_LABEL, "")).lower() == "true"
            return None if shared else str(labels[RETRAINED_LABEL])
        current = _parent(current, by_name)
    return None


def family_of(model: BertModel, by_name: Mapping[str, BertModel]) -> str | None:
    current: BertModel | None = model
    for _ in range(_MAX_LINEAGE):
        if current is None:
            return None
        if current.spec.family:
            return current.spec.family
        labels = _labels(current)
        if labels.get(FAMILY_LABEL):
            return str(labels[FAMILY_LABEL])
        current = _parent(current, by_name)
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


def _candidates(
    selector: ModelSelector, models: list[BertModel], deployment: str | None
) -> tuple[list[BertModel], list[str]]:
    """The models the selector may choose from, and the names of those that would
    qualify but were retrained for another deployment (for the message)."""
    by_name = {name_of(m): m for m in models}
    found = [m for m in models if is_ready(m) and family_of(m, by_name) == selector.family]
    if selector.format != "any":
        found = [m for m in found if m.status.format == selector.format]
    if selector.policy != "latest" and selector.min_macro_f1 is not None:
        floor = selector.min_macro_f1
        found = [m for m in found if (_metric(m, "macroF1") or -1.0) >= floor]
    if deployment is None:  # a caller that does not name the deployment skips nothing
        return found, []
    foreign = {name_of(m) for m in found if retrained_for(m, by_name) not in (None, deployment)}
    return [m for m in found if name_of(m) not in foreign], sorted(foreign)


def _choose(selector: ModelSelector, found: list[BertModel]) -> BertModel | None:
    ranked = _newest_first(found)
    if selector.policy == "bestMetric":
        scored = [m for m in ranked if _metric(m, selector.metric) is not None]
        # max() keeps the first of equal scores, and ranked is newest first.
        return max(scored, key=lambda m: _metric(m, selector.metric) or 0.0, default=None)
    return ranked[0] if ranked else None


def select(
    choice: ModelChoice,
    models: Iterable[BertModel | Mapping[str, Any]],
    *,
    deployment: str | None = None,
) -> Selection:
    """The model to serve and a sentence for the condition message. ``deployment``: the
    selecting BertDeployment's name; a selector skips models retrained for another one
    (None skips none)."""
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
    found, foreign = _candidates(selector, parsed, deployment)
    chosen = _choose(selector, found)
    if chosen is None:
        floor = (
            f", macroF1 >= {selector.min_macro_f1}"
            if selector.min_macro_f1 is not None and selector.policy != "latest"
            else ""
        )
        skipped = (
            f"; skipped {len(foreign)} retrained for another deployment "
            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}; "
            "that deployment's retrain.shareWithFamily would share them)"
            if foreign
            else ""
        )
        return Selection(
            None,
            f"no Ready BertModel of family {selector.family} "
            f"(format {selector.format}{floor}) for policy {selector.policy}{skipped}",
        )
    return Selection(name_of(chosen), f"policy {selector.policy} over family {selector.family}")


def select_model(
    choice: ModelChoice,
    models: Iterable[BertModel | Mapping[str, Any]],
    *,
    deployment: str | None = None,
) -> str | None:
    """The name of the BertModel to serve, or None when nothing qualifies."""
    return select(choice, models, deployment=deployment).name
