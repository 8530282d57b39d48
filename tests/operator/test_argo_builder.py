"""The Argo engine's builder (bertops.operator.runtime.argo_workflow), field by field: each step
template, the DDP layout, the retry strategy per exit code, resources, results as output
parameters, ownership; and the WorkflowTemplate in gitops/argo is what the builder writes."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import yaml

from bertops.api.steps import TrainStep
from bertops.operator.config import OperatorConfig
from bertops.operator.runtime import argo_template, manifests
from bertops.operator.runtime import argo_workflow as argo

CONFIG = OperatorConfig(
    runtime="kubernetes", image="registry.example/trainer:1", step_max_attempts=4
)
OWNER = {
    "apiVersion": "bertops.io/v1alpha1",
    "kind": "BertTraining",
    "name": "run-1",
    "uid": "0f0e0d0c-0000-4000-8000-000000000001",
    "controller": True,
    "blockOwnerDeletion": True,
}


def build(replicas: int = 2, **changes: Any) -> dict[str, Any]:
    steps = argo_template.example_steps("team-a", replicas=replicas)
    if changes:
        steps = [dataclasses.replace(s, **changes) if s.kind == "train" else s for s in steps]
    return argo.to_dict(argo.workflow("run-1-argo", "team-a", steps, CONFIG, owner=OWNER))


def template(body: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [t for t in body["spec"]["templates"] if t["name"] == name]
    return found


def tasks(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in template(body, argo.ENTRYPOINT)["dag"]["tasks"]}


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_workflow_metadata_and_ownership() -> None:
    body = build()
    assert body["apiVersion"] == "argoproj.io/v1alpha1" and body["kind"] == "Workflow"
    meta = body["metadata"]
    assert meta["name"] == "run-1-argo" and meta["namespace"] == "team-a"
    assert meta["labels"] == {
        "app.kubernetes.io/part-of": "bertops",
        "bertops.io/berttraining": "run-1",
    }
    assert meta["ownerReferences"] == [OWNER]
    spec = body["spec"]
    assert spec["entrypoint"] == "pipeline"
    assert spec["serviceAccountName"] == CONFIG.service_account
    assert spec["securityContext"] == manifests.pod_security_context()
    assert spec["volumes"] == [
        {"name": "artifacts", "persistentVolumeClaim": {"claimName": CONFIG.artifact_pvc}},
        {"name": "tmp", "emptyDir": {}},
    ]
    assert spec["ttlStrategy"] == {"secondsAfterCompletion": 86400}


def test_pipeline_order_and_dependencies() -> None:
    found = tasks(build())
    assert list(found) == ["prepare", "rendezvous", "train", "evaluate", "compress"]
    assert "depends" not in found["prepare"] and "depends" not in found["rendezvous"]
    assert (
        found["train"]["depends"]
        == "prepare.Succeeded && (rendezvous.Succeeded || rendezvous.Skipped)"
    )
    assert found["evaluate"]["depends"] == "train.Succeeded"
    assert found["compress"]["depends"] == "evaluate.Succeeded"


def test_spec_parameters_carry_each_step_spec() -> None:
    body = build()
    params = {p["name"]: p["value"] for p in body["spec"]["arguments"]["parameters"]}
    assert set(params) == {
        "prepare-spec",
        "train-spec",
        "replicas",
        "evaluate-spec",
        "compress-spec",
    }
    assert params["replicas"] == "2"
    train = TrainStep.model_validate_json(params["train-spec"])
    assert train.name == "train" and train.training.replicas == 2
    # The result file sits where the native engine puts it.
    assert train.result_uri == "/artifacts/team-a/steps/example-train/result.json"
    for kind in argo.ORDER:
        arg = tasks(body)[kind]["arguments"]["parameters"][0]
        assert arg == {"name": "spec", "value": f"{{{{workflow.parameters.{kind}-spec}}}}"}


@pytest.mark.parametrize("kind", argo.ORDER)
def test_step_template(kind: str) -> None:
    found = template(build(), kind)
    assert found["metadata"]["labels"] == {
        "app.kubernetes.io/part-of": "bertops",
        "app.kubernetes.io/component": f"step-{kind}",
    }
    assert found["inputs"]["artifacts"] == [
        {
            "name": "spec",
            "path": "/etc/bertops/step/spec.json",
            "raw": {"data": "{{inputs.parameters.spec}}"},
        }
    ]
    assert found["outputs"]["parameters"] == [
        {"name": "result", "valueFrom": {"path": "/tmp/bertops-result.json", "default": ""}}
    ]
    container = found["container"]
    assert container["image"] == "registry.example/trainer:1"
    assert container["imagePullPolicy"] == CONFIG.image_pull_policy
    assert container["command"] == [
        "bertops",
        "trainer",
        kind,
        "--spec",
        "/etc/bertops/step/spec.json",
    ]
    assert container["securityContext"] == manifests.container_security_context()
    assert container["volumeMounts"] == [
        {"name": "artifacts", "mountPath": "/artifacts/team-a"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    variables = env(container)
    assert variables["BERTOPS_TERMINATION_LOG"] == "/tmp/bertops-result.json"
    assert variables["HF_HUB_OFFLINE"] == "1" and variables["TRANSFORMERS_OFFLINE"] == "1"


def test_resources_per_step() -> None:
    body = build(cpu="4", memory="8Gi", gpu=1)
    assert template(body, "train")["container"]["resources"] == {
        "requests": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"},
        "limits": {"memory": "8Gi", "nvidia.com/gpu": "1"},
    }
    assert template(body, "prepare")["container"]["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"memory": "2Gi"},
    }


def test_secrets_by_reference() -> None:
    body = build(env_secrets=("hub-token",))
    assert template(body, "train")["container"]["envFrom"] == [{"secretRef": {"name": "hub-token"}}]
    assert "envFrom" not in template(body, "prepare")["container"]


def test_ddp_ranks_and_rendezvous() -> None:
    body = build(replicas=3)
    train_task = tasks(body)["train"]
    assert train_task["withSequence"] == {"count": "{{workflow.parameters.replicas}}"}
    assert train_task["arguments"]["parameters"][1] == {"name": "rank", "value": "{{item}}"}
    train = template(body, "train")
    assert [p["name"] for p in train["inputs"]["parameters"]] == ["spec", "rank"]
    assert json.loads(train["podSpecPatch"]) == {
        "hostname": "{{workflow.name}}-{{inputs.parameters.rank}}",
        "subdomain": "{{workflow.name}}",
    }
    variables = env(train["container"])
    assert variables["MASTER_ADDR"] == "{{workflow.name}}-0.{{workflow.name}}"
    assert variables["MASTER_PORT"] == str(manifests.MASTER_PORT)
    assert variables["WORLD_SIZE"] == "{{workflow.parameters.replicas}}"
    assert variables["RANK"] == "{{inputs.parameters.rank}}"
    assert variables["LOCAL_RANK"] == "0"
    assert train["container"]["ports"] == [
        {"name": "dist", "containerPort": manifests.MASTER_PORT, "protocol": "TCP"}
    ]
    assert tasks(body)["rendezvous"]["when"] == "{{workflow.parameters.replicas}} > 1"
    resource = template(body, "rendezvous")["resource"]
    assert resource["action"] == "apply" and resource["setOwnerReference"] is True
    service = yaml.safe_load(resource["manifest"])
    assert service["metadata"]["name"] == "{{workflow.name}}"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    # It selects exactly this Workflow's train pods (the label Argo sets, the template's).
    assert service["spec"]["selector"] == {
        "workflows.argoproj.io/workflow": "{{workflow.name}}",
        "app.kubernetes.io/component": "step-train",
    }
    for kind in ("prepare", "evaluate", "compress"):
        assert "MASTER_ADDR" not in env(template(body, kind)["container"])
        assert "podSpecPatch" not in template(body, kind)


def test_single_replica_skips_rendezvous() -> None:
    body = build(replicas=1)
    params = {p["name"]: p["value"] for p in body["spec"]["arguments"]["parameters"]}
    assert params["replicas"] == "1"  # WORLD_SIZE=1: the trainer stays single-process


@pytest.mark.parametrize("kind", argo.ORDER)
def test_retry_strategy_per_exit_code(kind: str) -> None:
    strategy = template(build(), kind)["retryStrategy"]
    # step_max_attempts=4: the first run and three retries.
    assert strategy["limit"] == "3"
    assert strategy["retryPolicy"] == "Always"
    # Exit 2 (bad input) is absent, so never retried; 1 and 3 are; pod errors too.
    assert (
        strategy["expression"]
        == 'lastRetry.status == "Error" || asInt(lastRetry.exitCode) in [1, 3]'
    )
    assert strategy["backoff"] == {"duration": "10s", "factor": "2", "cap": "300s"}


def test_subset_pipeline_train_only() -> None:
    (train,) = [s for s in argo_template.example_steps(replicas=1) if s.kind == "train"]
    body = argo.to_dict(argo.workflow("run-1", "default", [train], CONFIG))
    assert list(tasks(body)) == ["rendezvous", "train"]
    assert tasks(body)["train"]["depends"] == "(rendezvous.Succeeded || rendezvous.Skipped)"
    assert "ownerReferences" not in body["metadata"]
    # A one-step Workflow names its step's kind (the runtime reads that node's result).
    assert body["metadata"]["labels"][argo.STEP_KIND_LABEL] == "train"
    assert [t["name"] for t in body["spec"]["templates"]] == ["pipeline", "train", "rendezvous"]


def test_refusals() -> None:
    steps = argo_template.example_steps()
    with pytest.raises(ValueError, match="at most once"):
        argo.pipeline_spec([steps[0], steps[0]], CONFIG)
    with pytest.raises(ValueError, match="longer than"):
        argo.workflow("x" * 61, "default", steps, CONFIG)


def test_template_has_parameters_without_values() -> None:
    body = argo.to_dict(argo_template.workflow_template())
    assert body["kind"] == "WorkflowTemplate" and body["metadata"]["name"] == "bertops-pipeline"
    params = {p["name"]: p for p in body["spec"]["arguments"]["parameters"]}
    for kind in argo.ORDER:
        assert "value" not in params[f"{kind}-spec"]
    assert params["replicas"]["value"] == "1"


def test_committed_workflow_template_is_fresh() -> None:
    assert not argo_template.is_stale(), "run `make argo-template`"
