"""What the planners refuse before any step starts (unsupported task, URIs outside the
allowlist, a Secret the runtime cannot pass, a model name taken by a stranger), how
typed step results reach status, and that unknown result fields are reported."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bertops.api import dataset as dataset_api
from bertops.api.meta import find_condition
from bertops.api.steps import TrainDetails
from bertops.operator.planners import dataset as dataset_planner
from bertops.operator.planners import model as model_planner
from bertops.operator.planners import training as training_planner
from bertops.operator.runtime import manifests
from tests.operator import builders as b

KUBE = replace(b.CONFIG, runtime="kubernetes")
TOKEN = "/root/.bertops/clusters/demo/pki/token.csv"


def plan_training(training: Any, observed: Any = None, config: Any = b.CONFIG, **kw: Any) -> Any:
    return training_planner.plan(
        b.ref("BertTraining", "run"),
        training,
        b.ready_dataset(),
        observed or b.absent(),
        model_exists=kw.pop("model_exists", False),
        config=config,
        now=b.NOW,
        **kw,
    )


def plan_dataset(spec_path: str, value: Any, config: Any = b.CONFIG) -> Any:
    body = b.dataset().spec.to_wire()
    node = body
    keys = spec_path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    obj = dataset_api.BertDataset.model_validate({"metadata": {"name": "d"}, "spec": body})
    return dataset_planner.plan(b.ref("BertDataset"), obj, b.absent(), config=config, now=b.NOW)


def refused(plan: Any, type_: str, reason: str) -> str:
    """The plan starts nothing, sets type_=False with reason and posts a Warning."""
    assert plan.start is None and not plan.create
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    assert (conditions[type_]["status"], conditions[type_]["reason"]) == ("False", reason)
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", reason)]
    return str(conditions[type_]["message"])


def test_token_classification_is_refused_before_a_step_starts() -> None:
    plan = plan_training(b.training(task="tokenClassification"))
    message = refused(plan, "Succeeded", "UnsupportedTask")
    assert "tokenClassification" in message and "sequenceClassification" in message
    settled = b.training(plan.status, task="tokenClassification")
    assert training_planner.is_settled(b.ref("BertTraining", "run"), settled.status)


def test_evaluating_a_token_classification_model_is_refused() -> None:
    obj = b.model(
        artifactUri="/store/ns/ext", evaluationDatasetRef={"name": "d"}, task="tokenClassification"
    )
    plan = model_planner.plan(
        b.ref("BertModel", "m"),
        obj,
        model_planner.ModelWorld(dataset_uri="/store/ns/d"),
        config=b.CONFIG,
        now=b.NOW,
    )
    refused(plan, "Ready", "UnsupportedTask")


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("source.uri", TOKEN, "spec.source.uri"),
        ("source.uri", "/store/../root/.kube/config", "spec.source.uri"),
        ("source.uri", "https://169.254.169.254/latest/meta-data/iam/", "spec.source.uri"),
        ("outputUri", "/etc/cron.d", "spec.outputUri"),
        ("tokenizer.baseModel", {"path": "/home/user/model"}, "spec.tokenizer.baseModel.path"),
    ],
)
def test_dataset_uri_outside_the_allowlist_is_refused(path: str, value: Any, field: str) -> None:
    message = refused(plan_dataset(path, value), "Ready", "InvalidSpec")
    assert message.startswith(field) and "allowlist" in message


@pytest.mark.parametrize(
    ("sources", "field"),
    [
        ([{"uri": TOKEN}], "spec.additionalSources[0].uri"),
        ([{"uri": "/store/ns/f.jsonl"}, {"uri": "/store/../etc/x"}], "spec.additionalSources[1]"),
        ([{"uri": "http://metadata.google.internal/x.csv"}], "spec.additionalSources[0].uri"),
    ],
)
def test_additional_source_outside_the_allowlist_is_refused(
    sources: list[dict[str, str]], field: str
) -> None:
    message = refused(plan_dataset("additionalSources", sources), "Ready", "InvalidSpec")
    assert message.startswith(field) and "allowlist" in message


def test_additional_sources_inside_the_allowlist_start_the_step() -> None:
    secret = {"credentialsSecretRef": {"name": "fb-creds"}}
    sources = [{"uri": "/store/ns/feedback.jsonl"}, {"uri": "s3://team/fb.csv", **secret}]
    plan = plan_dataset("additionalSources", sources, config=KUBE)
    assert plan.start is not None and plan.start.env_secrets == ("fb-creds",)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"baseModel": {"path": TOKEN}}, "spec.baseModel.path"),
        ({"baseModel": {"config": {}, "tokenizer": "/root/tok"}}, "spec.baseModel.tokenizer"),
        ({"outputUri": "https://[fd00:ec2::254]/x"}, "spec.outputUri"),
    ],
)
def test_training_uri_outside_the_allowlist_is_refused(spec: dict[str, Any], field: str) -> None:
    assert refused(plan_training(b.training(**spec)), "Succeeded", "InvalidSpec").startswith(field)


def test_external_model_uri_outside_the_allowlist_is_refused() -> None:
    plan = model_planner.plan(
        b.ref("BertModel", "m"),
        b.model(artifactUri="file:///root/.kube"),
        model_planner.ModelWorld(),
        config=b.CONFIG,
        now=b.NOW,
    )
    assert refused(plan, "Ready", "InvalidSpec").startswith("spec.artifactUri")


def test_credentials_secret_reaches_the_job_by_reference_only() -> None:
    secret = {"credentialsSecretRef": {"name": "s3-creds"}}
    plan = plan_dataset("source", {"uri": "s3://team/tweets.csv", **secret}, config=KUBE)
    assert plan.start is not None and plan.start.env_secrets == ("s3-creds",)
    job = manifests.job(plan.start, KUBE)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    configmap = manifests.spec_configmap(plan.start, KUBE)
    assert "s3-creds" in configmap["data"]["spec.json"]  # the name, never a value
    training = b.training(baseModel={"path": "s3://team/base", **secret})
    assert plan_training(training, config=KUBE).start.env_secrets == ("s3-creds",)


def test_credentials_secret_is_refused_by_the_local_runtime() -> None:
    plan = plan_dataset(
        "source", {"uri": "s3://team/t.csv", "credentialsSecretRef": {"name": "creds"}}
    )
    assert "kubernetes runtime" in refused(plan, "Ready", "InvalidSpec")


FOREIGN = "NameConflict"


def test_a_foreign_model_of_that_name_refuses_the_run_up_front() -> None:
    plan = plan_training(b.training(), model_exists=True, model_foreign=True)
    assert "not owned by this BertTraining" in refused(plan, "Succeeded", FOREIGN)


def test_a_foreign_model_appearing_during_the_run_is_never_adopted() -> None:
    trained = b.succeeded("train", artifacts={"model": "/store/ns/m"}, details={"modelName": "run"})
    plan = plan_training(b.training(), trained, model_exists=True, model_foreign=True)
    refused(plan, "Succeeded", FOREIGN)
    assert "modelName" not in plan.status


def test_typed_train_details_reach_status_and_unknown_fields_warn() -> None:
    details = TrainDetails(
        model_name="run",
        epochs_run=2,
        test_metrics={"accuracy": 0.9, "macroF1": 0.8},
        validation_metrics={"accuracy": 0.85},
    ).to_wire() | {"gradNormP99": 3.5}
    plan = plan_training(b.training(), b.succeeded("train", details=details))
    assert plan.status["testMetrics"] == {"accuracy": 0.9, "macroF1": 0.8}
    assert plan.status["progress"]["display"] == "2/3"
    assert "gradNormP99" not in str(plan.status)
    warnings = [e for e in plan.events if e.type == "Warning"]
    assert [e.reason for e in warnings] == ["UnknownResultFields"]
    assert "gradNormP99" in warnings[0].message
    done = find_condition(b.training(plan.status).status.conditions, "Succeeded")
    assert done is not None and done.reason == "Completed"
