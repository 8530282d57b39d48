"""The kubernetes runtime's step outcomes and adoption on the real API server (the test
acts as kubelet and Job controller, see test_kubernetes_runtime.act_as_kubelet): a Job
that completed without a result is a failed step, a transient exit code is retried as a
new Job, and an existing Job is adopted only from its owner and when not being deleted."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bertops.api.dataset import BertDatasetSpec
from bertops.api.steps import PrepareStep, StepResult
from bertops.operator.config import OperatorConfig
from bertops.operator.kube import Kube
from bertops.operator.planners.common import step_name
from bertops.operator.runtime import manifests
from bertops.operator.runtime.base import StepConflictError, StepPhase, StepRequest
from bertops.operator.runtime.kubernetes import KubernetesRuntime
from tests.integration import manifests as m
from tests.operator.conftest import has_event, wait_events
from tests.operator.test_kubernetes_runtime import IMAGE, act_as_kubelet, job_status, now
from tests.waiting import wait_for, wait_reason

pytestmark = pytest.mark.integration
SETTINGS: dict[str, Any] = {
    "runtime": "kubernetes",
    "image": IMAGE,
    "allowed_uri_prefixes": ("/data",),  # the example manifests' source
    "step_retry_base_seconds": 0.2,
    "poll_seconds": 0.3,
}


def create_dataset(kube: Kube, namespace: str, name: str) -> str:
    body = kube.create({**m.dataset(), "metadata": {"name": name, "namespace": namespace}})
    return str(body["metadata"]["uid"])


def wait_job(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return wait_for(lambda: kube.read("batch/v1", "Job", namespace, name), what=f"Job {name}")


def test_a_job_completed_without_a_result_is_a_failed_step(
    kube_layer: Kube, namespace: str, start_operator: Any
) -> None:
    start_operator(namespace, **SETTINGS)
    job = step_name("quiet", "prep", 1, create_dataset(kube_layer, namespace, "quiet"))
    wait_job(kube_layer, namespace, job)
    act_as_kubelet(kube_layer, namespace, job, None, succeeded=True)
    ready = wait_reason(kube_layer, namespace, "quiet", "ResultUnreadable")
    assert ready["status"] == "False"
    assert f"kubectl logs job/{job}" in ready["message"]
    wait_events(
        kube_layer, namespace, "quiet", has_event("Warning", "ResultUnreadable"), "the Warning"
    )


def kubelet_leaves_message(kube: Kube, namespace: str, job_name: str, message: str) -> None:
    """act_as_kubelet for a step that exited 0 leaving ``message`` as its termination
    message verbatim (not necessarily a result), then the Job controller's Complete."""
    pod_name = f"{job_name}-0-vwxyz"
    pod: Any = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "labels": {manifests.STEP_LABEL: job_name, "job-name": job_name},
        },
        "spec": {"restartPolicy": "Never", "containers": [{"name": "step", "image": IMAGE}]},
    }
    kube.core.create_namespaced_pod(namespace, pod)
    terminated = {"exitCode": 0, "reason": "Completed", "startedAt": now(), "finishedAt": now()}
    step = {"name": "step", "image": IMAGE, "imageID": "", "ready": False, "restartCount": 0}
    kube.core.patch_namespaced_pod_status(
        pod_name,
        namespace,
        {
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [
                    {**step, "state": {"terminated": {**terminated, "message": message}}}
                ],
            }
        },
    )
    kube.dynamic.resources.get(api_version="batch/v1", kind="Job").status.patch(
        name=job_name,
        namespace=namespace,
        body={"status": job_status(True, 0, "")},
        content_type="application/merge-patch+json",
    )


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ("", "left no termination message"),
        ("done, see you\n", "is not a StepResult"),
        ("another step", "carries the result of another step"),
    ],
    ids=["empty", "garbage", "another-step"],
)
def test_a_job_completed_with_an_unusable_message_is_a_failed_step(
    kube_layer: Kube, namespace: str, start_operator: Any, message: str, says: str
) -> None:
    start_operator(namespace, **SETTINGS)
    uid = create_dataset(kube_layer, namespace, "mute")
    job = step_name("mute", "prep", 1, uid)
    wait_job(kube_layer, namespace, job)
    if message == "another step":  # a well-formed result, of the next attempt
        other = step_name("mute", "prep", 1, uid, 2)
        message = StepResult(kind="prepare", name=other, succeeded=True).compact_json()
    kubelet_leaves_message(kube_layer, namespace, job, message)
    ready = wait_reason(kube_layer, namespace, "mute", "ResultUnreadable")
    assert ready["status"] == "False"
    assert ready["message"].startswith(f"Job {job} completed but its step left no result")
    assert says in ready["message"] and f"kubectl logs job/{job}" in ready["message"]
    mute_body = kube_layer.get("BertDataset", namespace, "mute")
    assert mute_body is not None
    status = mute_body["status"]
    assert status["attempts"] == 1 and status["step"] == job  # final: no second attempt
    assert (
        kube_layer.read("batch/v1", "Job", namespace, step_name("mute", "prep", 1, uid, 2)) is None
    )


def test_a_transient_exit_code_is_retried_as_a_new_job(
    kube_layer: Kube, namespace: str, start_operator: Any
) -> None:
    start_operator(namespace, **SETTINGS)
    uid = create_dataset(kube_layer, namespace, "flaky")
    first, second = (step_name("flaky", "prep", 1, uid, n) for n in (1, 2))
    wait_job(kube_layer, namespace, first)
    hiccup = StepResult(
        kind="prepare", name=first, succeeded=False, exit_code=3, message="storage hiccup"
    )
    act_as_kubelet(
        kube_layer,
        namespace,
        first,
        hiccup,
        succeeded=False,
        exit_code=3,
        failed_reason="BackoffLimitExceeded",
    )
    wait_job(kube_layer, namespace, second)

    # The operator creates the Job before it writes the status that names it.
    def status_naming_second() -> dict[str, Any] | None:
        found = (kube_layer.get("BertDataset", namespace, "flaky") or {}).get("status") or {}
        return found if found.get("step") == second else None

    status = wait_for(status_naming_second, what="the status naming attempt 2")
    assert status["attempts"] == 2 and status["step"] == second
    done = StepResult(
        kind="prepare",
        name=second,
        succeeded=True,
        artifacts={"dataset": "/artifacts/x"},
        checksums={"dataset": "e" * 64},
        details={"rows": {"train": 8, "validation": 1, "test": 1, "total": 10}},
    )
    act_as_kubelet(kube_layer, namespace, second, done, succeeded=True)
    wait_reason(kube_layer, namespace, "flaky", "Prepared")
    wait_events(kube_layer, namespace, "flaky", has_event("Warning", "Retrying"), "Retrying")


def test_a_job_is_adopted_only_from_its_owner_and_not_while_deleted(
    kube_layer: Kube, namespace: str, tmp_path: Path
) -> None:
    config = OperatorConfig(runtime="kubernetes", image=IMAGE, artifact_root=str(tmp_path))
    runtime = KubernetesRuntime(config, kube_layer)
    ours, theirs = "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"
    owner = {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": "BertDataset",
        "name": "s",
        "uid": ours,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    dataset = BertDatasetSpec.model_validate(m.dataset()["spec"])
    name = step_name("s", "prep", 1, ours)
    request = StepRequest(
        name=name,
        namespace=namespace,
        spec=PrepareStep(name=name, dataset=dataset, output_uri="/artifacts/s"),
        owner=owner,
    )

    # A Job of that name owned by another object is neither observed nor adopted.
    for manifest in manifests.children(replace(request, owner={**owner, "uid": theirs}), config):
        kube_layer.apply(manifest)
    assert runtime.observe(namespace, name, ours).phase == StepPhase.ABSENT
    with pytest.raises(StepConflictError, match="not owned by this object"):
        runtime.start(request)

    # Our own Job, but being deleted (held by a finalizer): wait, do not adopt it.
    held = manifests.job(request, config)
    held["metadata"]["finalizers"] = ["test.bertops.io/hold"]
    kube_layer.apply(held)
    kube_layer.delete("batch/v1", "Job", namespace, name)
    deleting = kube_layer.read("batch/v1", "Job", namespace, name)
    assert deleting is not None
    assert deleting["metadata"]["deletionTimestamp"]
    assert runtime.observe(namespace, name, ours).phase == StepPhase.ABSENT
    with pytest.raises(StepConflictError, match="being deleted"):
        runtime.start(request)

    kube_layer.dynamic.resources.get(api_version="batch/v1", kind="Job").patch(
        name=name,
        namespace=namespace,
        body={"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json",
    )
    wait_for(lambda: kube_layer.read("batch/v1", "Job", namespace, name) is None, what="gone")
    runtime.start(request)
    job = kube_layer.read("batch/v1", "Job", namespace, name)
    assert job is not None and job["metadata"]["ownerReferences"][0]["uid"] == ours
    assert runtime.observe(namespace, name, ours).phase == StepPhase.RUNNING


def test_a_job_runs_one_attempt_and_fails_at_once_on_bad_input(tmp_path: Path) -> None:
    """The Job never retries itself (the operator retries exit codes 1 and 3 as new Jobs,
    with backoff, counted in status); exit code 2 fails it at once, and an eviction
    costs no attempt."""
    config = OperatorConfig(runtime="kubernetes", image=IMAGE, artifact_root=str(tmp_path))
    dataset = BertDatasetSpec.model_validate(m.dataset()["spec"])
    request = StepRequest(
        name="s", namespace="ns", spec=PrepareStep(name="s", dataset=dataset, output_uri="/o")
    )
    spec = manifests.job(request, config)["spec"]
    assert spec["backoffLimit"] == 0
    fail, ignore = spec["podFailurePolicy"]["rules"]
    assert fail == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "step", "operator": "In", "values": [2]},
    }
    assert ignore["action"] == "Ignore"
    assert ignore["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
