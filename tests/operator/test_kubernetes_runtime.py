"""The kubernetes runtime against a real API server: the Jobs, ConfigMaps and Services
the operator creates are checked field by field and pass server-side dry-run; the test
stands in for the kubelet (a Pod with a termination message, a Job status) and the
custom resource's status follows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bertops.api.steps import StepResult
from bertops.operator.kube import Kube
from bertops.operator.planners.common import step_name
from bertops.operator.runtime import manifests
from tests.integration import manifests as m
from tests.operator.conftest import has_event, reasons, wait_events
from tests.waiting import condition_of as condition
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
IMAGE = "registry.example/bertops-trainer:test"
# The example manifests read /data/...: admitted by the operator's URI allowlist.
KUBERNETES: dict[str, Any] = {
    "runtime": "kubernetes",
    "image": IMAGE,
    "allowed_uri_prefixes": ("/data",),
}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def act_as_kubelet(
    kube: Kube,
    namespace: str,
    job_name: str,
    result: StepResult | None,
    succeeded: bool,
    exit_code: int = 0,
    failed_reason: str = "PodFailurePolicy",
) -> None:
    """What a kubelet and the Job controller would do: a Pod that ran the step and wrote
    its termination message, then the Job's terminal status."""
    pod: Any = {  # a plain dict body: the client validates it into its V1Pod
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job_name}-0-abcde",
            "namespace": namespace,
            "labels": {manifests.STEP_LABEL: job_name, "job-name": job_name},
        },
        "spec": {"restartPolicy": "Never", "containers": [{"name": "step", "image": IMAGE}]},
    }
    kube.core.create_namespaced_pod(namespace, pod)
    terminated: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": "Completed" if succeeded else "Error",
        "startedAt": now(),
        "finishedAt": now(),
    }
    if result is not None:
        terminated["message"] = result.model_dump_json(by_alias=True, exclude_none=True)
    kube.core.patch_namespaced_pod_status(
        pod["metadata"]["name"],
        namespace,
        {
            "status": {
                "phase": "Succeeded" if succeeded else "Failed",
                "containerStatuses": [
                    {
                        "name": "step",
                        "image": IMAGE,
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": terminated},
                    }
                ],
            }
        },
    )
    status = job_status(succeeded, exit_code, failed_reason)
    kube.dynamic.resources.get(api_version="batch/v1", kind="Job").status.patch(
        name=job_name,
        namespace=namespace,
        body={"status": status},
        content_type="application/merge-patch+json",
    )


def job_status(succeeded: bool, exit_code: int, failed_reason: str) -> dict[str, Any]:
    """The terminal status the Job controller would write."""
    if succeeded:
        return {
            "startTime": now(),
            "completionTime": now(),
            "succeeded": 1,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now()},
                {"type": "Complete", "status": "True", "lastTransitionTime": now()},
            ],
        }
    return {
        "startTime": now(),
        "failed": 1,
        "conditions": [
            {
                "type": "FailureTarget",
                "status": "True",
                "lastTransitionTime": now(),
                "reason": failed_reason,
                "message": f"exit code {exit_code}",
            },
            {
                "type": "Failed",
                "status": "True",
                "lastTransitionTime": now(),
                "reason": failed_reason,
                "message": f"exit code {exit_code}",
            },
        ],
    }


def test_dataset_becomes_a_job_and_follows_its_status(
    kube_layer: Kube, namespace: str, start_operator: Any
) -> None:
    start_operator(namespace, **KUBERNETES)
    dataset = kube_layer.create(
        {**m.dataset(), "metadata": {"name": "tweets", "namespace": namespace}}
    )
    job_name = step_name("tweets", "prep", 1, dataset["metadata"]["uid"])
    job = wait_for(
        lambda: kube_layer.read("batch/v1", "Job", namespace, job_name), what="the prepare Job"
    )
    configmap = kube_layer.read("v1", "ConfigMap", namespace, job_name)
    assert configmap is not None and '"kind": "prepare"' in configmap["data"]["spec.json"]

    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "BertDataset",
        "tweets",
        dataset["metadata"]["uid"],
        True,
    )
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == IMAGE
    assert container["command"] == [
        "bertops",
        "trainer",
        "prepare",
        "--spec",
        "/etc/bertops/step/spec.json",
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HF_HUB_OFFLINE"] == "1" and env["BERTOPS_TERMINATION_LOG"] == "/dev/termination-log"
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"memory": "2Gi"},
    }
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["restartPolicy"] == "Never"
    assert {v["name"] for v in pod["volumes"]} == {"spec", "artifacts", "tmp"}
    assert job["spec"]["podFailurePolicy"] == manifests.POD_FAILURE_POLICY
    # A hung step ends (the Job fails at its deadline) and its /tmp is bounded.
    assert job["spec"]["activeDeadlineSeconds"] == 24 * 3600
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"] == {"sizeLimit": "8Gi"}

    # The manifests pass server-side dry-run as well as the real apply above.
    for manifest in (job, configmap):
        clean = {k: v for k, v in manifest.items() if k != "status"}
        clean["metadata"] = {
            k: manifest["metadata"][k] for k in ("name", "namespace", "labels", "ownerReferences")
        }
        kube_layer.apply(clean, dry_run=True)

    result = StepResult(
        kind="prepare",
        name=job_name,
        succeeded=True,
        artifacts={"dataset": "/artifacts/x"},
        checksums={"dataset": "f" * 64},
        details={
            "rows": {"train": 8, "validation": 1, "test": 1, "total": 10},
            "labels": ["neg", "pos"],
            "numLabels": 2,
        },
    )
    act_as_kubelet(kube_layer, namespace, job_name, result, succeeded=True)
    ready = wait_for(
        lambda: (
            (c := condition(kube_layer.get("BertDataset", namespace, "tweets"), "Ready"))
            and c["status"] == "True"
            and c
        ),
        what="Ready=True",
    )
    assert ready["reason"] == "Prepared"
    dataset_body = kube_layer.get("BertDataset", namespace, "tweets")
    assert dataset_body is not None
    status = dataset_body["status"]
    assert status["rows"]["total"] == 10 and status["shortChecksum"] == "f" * 12
    wait_events(
        kube_layer,
        namespace,
        "tweets",
        lambda seen: {"Preparing", "Prepared"} <= reasons(seen),
        "Preparing and Prepared",
    )


def test_failed_job_sets_condition_and_stops(
    kube_layer: Kube, namespace: str, start_operator: Any
) -> None:
    start_operator(namespace, **KUBERNETES)
    bad = kube_layer.create({**m.dataset(), "metadata": {"name": "bad", "namespace": namespace}})
    job_name = step_name("bad", "prep", 1, bad["metadata"]["uid"])
    wait_for(lambda: kube_layer.read("batch/v1", "Job", namespace, job_name), what="the Job")
    result = StepResult(
        kind="prepare",
        name=job_name,
        succeeded=False,
        exit_code=2,
        reason="BadInput",
        message="column 'text' not found; columns: a, b",
    )
    act_as_kubelet(kube_layer, namespace, job_name, result, succeeded=False, exit_code=2)
    ready = wait_for(
        lambda: (
            (c := condition(kube_layer.get("BertDataset", namespace, "bad"), "Ready"))
            and c["reason"] == "InvalidData"
            and c
        ),
        what="Ready=False InvalidData",
    )
    assert ready["status"] == "False"
    assert "column 'text' not found" in ready["message"]
    wait_events(kube_layer, namespace, "bad", has_event("Warning", "InvalidData"), "the Warning")


def test_distributed_training_is_an_indexed_job_with_headless_service(
    kube_layer: Kube, namespace: str, start_operator: Any
) -> None:
    start_operator(namespace, **KUBERNETES)
    kube_layer.create({**m.dataset(), "metadata": {"name": "tweets", "namespace": namespace}})
    kube_layer.patch_status(
        "BertDataset",
        namespace,
        "tweets",
        {
            "observedGeneration": 1,
            "step": "tweets-prep-g1",
            "artifactUri": "/artifacts/d",
            "checksum": "a" * 64,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Prepared",
                    "message": "",
                    "lastTransitionTime": now(),
                    "observedGeneration": 1,
                }
            ],
        },
    )
    training = m.training(replicas=2, resources={"cpu": "2", "memory": "3Gi", "gpu": 1})
    training["metadata"]["namespace"] = namespace
    uid = kube_layer.create(training)["metadata"]["uid"]
    name = step_name("run-1", "train", 1, uid)
    job = wait_for(
        lambda: kube_layer.read("batch/v1", "Job", namespace, name),
        what="the train Job",
    )
    service = kube_layer.read("v1", "Service", namespace, name)
    assert service is not None and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {manifests.STEP_LABEL: name}
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert spec["template"]["spec"]["subdomain"] == name
    # The DDP port is open only between this Job's own pods (selected by its labels).
    policy = kube_layer.read("networking.k8s.io/v1", "NetworkPolicy", namespace, name)
    assert policy is not None
    own = {"podSelector": {"matchLabels": job["metadata"]["labels"]}}
    assert job["metadata"]["labels"].items() <= spec["template"]["metadata"]["labels"].items()
    ddp = [{"port": 29500, "protocol": "TCP"}]
    assert policy["spec"]["podSelector"] == own["podSelector"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [{"from": [own], "ports": ddp}]
    assert policy["spec"]["egress"] == [{"to": [own], "ports": ddp}]
    clean = {k: v for k, v in policy.items() if k != "status"}
    clean["metadata"] = {
        k: policy["metadata"][k] for k in ("name", "namespace", "labels", "ownerReferences")
    }
    kube_layer.apply(clean, dry_run=True)
    container = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MASTER_ADDR"]["value"] == f"{name}-0.{name}"
    assert env["WORLD_SIZE"]["value"] == "2" and env["MASTER_PORT"]["value"] == "29500"
    assert "job-completion-index" in env["RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert container["resources"]["limits"] == {"memory": "3Gi", "nvidia.com/gpu": "1"}
    status = wait_for(
        lambda: (
            (kube_layer.get("BertTraining", namespace, "run-1") or {})
            .get("status", {})
            .get("progress")
        ),
        what="training progress",
    )
    assert status["display"] == "0/2"

    # No finalizer: deleting the BertTraining never waits for the operator. Its Job,
    # Service and ConfigMap are owned by it, so the garbage collector removes them (this
    # API server runs no controller-manager, so here they stay).
    training_body = kube_layer.get("BertTraining", namespace, "run-1")
    assert training_body is not None
    assert not training_body["metadata"].get("finalizers")
    from kubernetes import client

    client.CustomObjectsApi(kube_layer.api_client).delete_namespaced_custom_object(
        "bertops.io", "v1alpha1", namespace, "berttrainings", "run-1"
    )
    assert kube_layer.get("BertTraining", namespace, "run-1") is None
    for kind, api_version in (
        ("Job", "batch/v1"),
        ("Service", "v1"),
        ("ConfigMap", "v1"),
        ("NetworkPolicy", "networking.k8s.io/v1"),
    ):
        child = kube_layer.read(api_version, kind, namespace, name)
        assert child is not None
        owner = child["metadata"]["ownerReferences"][0]
        assert (owner["uid"], owner["controller"], owner["blockOwnerDeletion"]) == (uid, True, True)
