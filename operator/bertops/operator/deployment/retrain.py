"""Pure builders of the objects a drift-triggered retraining creates: a new BertDataset
revision (the original dataset's spec, plus the labelled feedback the gateway collected
as an additional, optional source whose newest share is held out as a frozen evaluation
set) and a BertTraining copied from the source run, with a new model name in the
deployment's family and the cause in ``spec.trigger`` (which also says whether other
deployments of the family may select the model it registers).

Called by :mod:`bertops.operator.deployment.monitor_chain` once
:func:`bertops.operator.rollout.retrain.may_retrain` allowed a retraining (and, with
``retrain.minFeedbackRows``, once enough feedback arrived). Both objects are owned by
the BertDeployment (garbage-collected with it) and carry :data:`RETRAINED_LABEL`, which
the GitOps docs tell Argo CD to ignore: they are the operator's, not the repository's,
so Argo CD neither prunes them nor reports drift. The user's objects are only read,
never written.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any

from bertops.api import dataset as dataset_api
from bertops.api import training as training_api
from bertops.api.kinds import API_VERSION
from bertops.api.meta import LocalObjectReference
from bertops.operator.objects import ObjectRef

RETRAINED_LABEL = training_api.RETRAINED_LABEL
"""Set to the deployment's name on every object a retraining creates (and, by the
training planner, on the BertModel the retraining registers)."""
CAUSE_ANNOTATION = "bertops.io/retrain-cause"
MANAGED_BY = {"app.kubernetes.io/managed-by": "bertops-operator"}
MAX_NAME = 63


def retrain_name(deployment: str, number: int) -> str:
    """``<deployment>-retrain-<n>``, shortened with a digest to stay a DNS label (the
    training's name also names its model, and a Job label holds at most 63 characters)."""
    tail = f"-retrain-{number}"
    if len(deployment) + len(tail) <= MAX_NAME:
        return f"{deployment}{tail}"
    digest = hashlib.sha256(deployment.encode()).hexdigest()[:6]
    head = deployment[: MAX_NAME - len(tail) - len(digest) - 1].rstrip("-.")
    return f"{head}-{digest}{tail}"


def _metadata(
    name: str, owner: ObjectRef, cause: dict[str, Any], extra_labels: dict[str, str]
) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": {
            "app.kubernetes.io/part-of": "bertops",
            **MANAGED_BY,
            RETRAINED_LABEL: owner.name,
            **extra_labels,
        },
        "annotations": {CAUSE_ANNOTATION: json.dumps(cause, sort_keys=True)},
        "ownerReferences": [owner.owner_reference()],
    }


def cause(
    owner: ObjectRef, score: float | None, report_uri: str | None, at: datetime
) -> dict[str, Any]:
    return {
        "reason": "DriftDetected",
        "deployment": owner.name,
        "driftScore": score,
        "reportUri": report_uri,
        "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def dataset_manifest(
    name: str,
    owner: ObjectRef,
    original: dataset_api.BertDatasetSpec,
    feedback_uri: str | None,
    why: dict[str, Any],
    holdout_fraction: float = 0.0,
) -> dict[str, Any]:
    """The original dataset's spec with the feedback log appended as an optional JSONL
    source (text, label), so a retraining before any feedback arrived still prepares.
    With ``holdout_fraction`` > 0 the newest share of the feedback (by its ``time``
    column) is held out of training: the frozen set a retrained model is judged on.
    The label list is pinned to the original's, so feedback cannot add classes."""
    spec = original.model_copy(deep=True)
    sources = list(spec.additional_sources or [])
    if feedback_uri is not None:
        # A revision of a revision lists the feedback once, with this policy's holdout.
        sources = [s for s in sources if s.uri != feedback_uri]
        sources.append(
            dataset_api.DataSource(
                uri=feedback_uri,
                format="jsonl",
                optional=True,
                holdout_fraction=holdout_fraction if holdout_fraction > 0 else None,
            )
        )
    spec.additional_sources = sources[-8:] or None
    spec.output_uri = None  # the operator's store: a new revision, never over the original
    return {
        "apiVersion": API_VERSION,
        "kind": "BertDataset",
        "metadata": _metadata(name, owner, why, {}),
        "spec": spec.to_wire(),
    }


def training_manifest(
    name: str,
    owner: ObjectRef,
    source: training_api.BertTrainingSpec,
    family: str,
    why: dict[str, Any],
    at: datetime,
    *,
    share_with_family: bool = False,
) -> dict[str, Any]:
    """The source run's spec on the new dataset; the model it registers is named after
    the training (so the chain is readable) in the deployment's family, selected only by
    this deployment unless ``share_with_family`` (``retrain.shareWithFamily``)."""
    spec = source.model_copy(deep=True)
    spec.dataset_ref = LocalObjectReference(name=name)
    spec.model = training_api.ModelTemplate(name=name, family=family)
    spec.output_uri = None
    spec.trigger = training_api.RetrainTrigger(
        reason="DriftDetected",
        deployment=owner.name,
        drift_score=why.get("driftScore"),
        report_uri=why.get("reportUri"),
        time=at,
        share_with_family=share_with_family,
    )
    labels = {"bertops.io/family": family} if re.fullmatch(r"[a-z0-9.-]{1,63}", family) else {}
    return {
        "apiVersion": API_VERSION,
        "kind": "BertTraining",
        "metadata": _metadata(name, owner, why, labels),
        "spec": spec.to_wire(),
    }
