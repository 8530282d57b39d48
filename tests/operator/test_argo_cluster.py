"""The Argo engine's Workflows on a real API server with Argo's full CRDs (v4.0.5, from its
module): every Workflow the builder makes and the gitops WorkflowTemplate pass server-side
dry-run with strict field validation; and Argo's workflow controller, on loopback against
the embedded API server, accepts a Workflow and creates its pods as planned. There is no
kubelet: pods stay Pending, and the test plays the kubelet (and Argo's wait container)
for the one pod the train ranks wait on."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from bertops.api.steps import StepResult
from bertops.operator.kube import Kube
from bertops.operator.runtime import argo_template
from bertops.operator.runtime import argo_workflow as argo
from bertops.operator.runtime.argo import ArgoRuntime
from bertops.operator.runtime.base import StepPhase
from tests.operator.argo_helpers import CONFIG, example_workflows, needs_argo
from tests.waiting import wait_for

if TYPE_CHECKING:
    from bertops.cluster.argo_workflows.run import WorkflowController

pytestmark = [pytest.mark.integration, pytest.mark.slow, needs_argo]
GROUP, VERSION = "argoproj.io", "v1alpha1"


def differences(left: Any, right: Any, path: str = "") -> list[str]:
    """Where two JSON documents differ, as paths (a readable assertion message)."""
    if isinstance(left, dict) and isinstance(right, dict):
        return [
            d
            for key in sorted(set(left) | set(right))
            for d in differences(left.get(key), right.get(key), f"{path}.{key}")
        ]
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        return [
            d
            for i, (a, b) in enumerate(zip(left, right, strict=True))
            for d in differences(a, b, f"{path}[{i}]")
        ]
    return [] if left == right else [f"{path}: {left!r} != {right!r}"]


def custom(kube: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(kube)


@pytest.mark.parametrize("name", sorted(example_workflows()))
def test_workflow_passes_server_side_dry_run(
    kube: Any, namespace: str, argo_crds: None, name: str
) -> None:
    body = example_workflows(namespace)[name]
    created = custom(kube).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "workflows", body, dry_run="All", field_validation="Strict"
    )
    # Nothing was pruned by Argo's schema: the server's object is the builder's.
    assert not differences(created["spec"], body["spec"])


def test_workflow_template_passes_server_side_dry_run(
    kube: Any, namespace: str, argo_crds: None
) -> None:
    body = yaml.safe_load(argo_template.TEMPLATE_PATH.read_text())
    created = custom(kube).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "workflowtemplates",
        body,
        dry_run="All",
        field_validation="Strict",
    )
    assert not differences(created["spec"], body["spec"])


def pods(kube: Any, namespace: str, workflow: str) -> list[Any]:
    from kubernetes import client

    found = client.CoreV1Api(kube).list_namespaced_pod(
        namespace, label_selector=f"workflows.argoproj.io/workflow={workflow}"
    )
    return list(found.items)


def act_as_kubelet_and_wait_container(
    kube: Any,
    namespace: str,
    workflow: str,
    pod: Any,
    outputs: dict[str, Any] | None = None,
    exit_code: int = 0,
) -> None:
    """The pod ran and its step exited with ``exit_code`` (the kubelet's part), and its
    outputs are reported (Argo's wait container's part: a completed WorkflowTaskResult
    named after the node)."""
    from kubernetes import client

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    statuses = [
        {
            "name": c.name,
            "image": c.image,
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "state": {
                "terminated": {
                    "exitCode": exit_code if c.name == "main" else 0,
                    "reason": "Error" if exit_code and c.name == "main" else "Completed",
                    "startedAt": now,
                    "finishedAt": now,
                }
            },
        }
        for c in pod.spec.containers
    ]
    client.CoreV1Api(kube).patch_namespaced_pod_status(
        pod.metadata.name,
        namespace,
        {
            "status": {
                "phase": "Failed" if exit_code else "Succeeded",
                "startTime": now,
                "containerStatuses": statuses,
            }
        },
    )
    node_id = pod.metadata.annotations["workflows.argoproj.io/node-id"]
    result = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WorkflowTaskResult",
        "metadata": {
            "name": node_id,
            "namespace": namespace,
            "labels": {
                "workflows.argoproj.io/workflow": workflow,
                "workflows.argoproj.io/report-outputs-completed": "true",
            },
        },
    }
    if outputs:
        result["outputs"] = outputs
    custom(kube).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "workflowtaskresults", result
    )


def _service_account(kube: Any, namespace: str) -> None:
    from kubernetes import client

    # A plain dict body, as the operator sends them: the client validates it into its model.
    body: Any = {"metadata": {"name": CONFIG.service_account}}
    client.CoreV1Api(kube).create_namespaced_service_account(namespace, body)


def test_controller_creates_rank_pods_as_planned(
    kube: Any, namespace: str, controller: WorkflowController
) -> None:
    _service_account(kube, namespace)
    (train,) = [s for s in argo_template.example_steps(namespace, replicas=3) if s.kind == "train"]
    name = "ddp-run"
    body = argo.to_dict(argo.workflow(name, namespace, [train], CONFIG))
    custom(kube).create_namespaced_custom_object(GROUP, VERSION, namespace, "workflows", body)

    # First the rendezvous (a resource template's pod); the ranks wait on it.
    (rendezvous,) = wait_for(
        lambda: pods(kube, namespace, name), what="the rendezvous pod", log=controller.log
    )
    assert (
        rendezvous.metadata.annotations["workflows.argoproj.io/node-name"] == f"{name}.rendezvous"
    )
    workflow = custom(kube).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "workflows", name
    )
    assert workflow["status"]["phase"] == "Running"
    # Argo hands the resolved template to its executor's init container (ARGO_TEMPLATE).
    containers = [*(rendezvous.spec.init_containers or []), *rendezvous.spec.containers]
    variables = {e.name: e.value for c in containers for e in c.env or []}
    manifest = yaml.safe_load(json.loads(variables["ARGO_TEMPLATE"])["resource"]["manifest"])
    assert manifest["metadata"]["name"] == name  # {{workflow.name}} resolved
    act_as_kubelet_and_wait_container(kube, namespace, name, rendezvous)

    def rank_pods() -> list[Any]:
        found = [
            p
            for p in pods(kube, namespace, name)
            if p.metadata.labels.get("app.kubernetes.io/component") == "step-train"
        ]
        return found if len(found) == 3 else []

    by_rank = {}
    for pod in wait_for(rank_pods, what="three train rank pods", log=controller.log):
        main = next(c for c in pod.spec.containers if c.name == "main")
        env = {e.name: e.value for e in main.env if e.value is not None}
        by_rank[env["RANK"]] = (pod, main, env)
    assert sorted(by_rank) == ["0", "1", "2"]
    for rank, (pod, main, env) in by_rank.items():
        assert pod.status.phase == "Pending"  # no kubelet here
        assert pod.spec.hostname == f"{name}-{rank}" and pod.spec.subdomain == name
        assert env["MASTER_ADDR"] == f"{name}-0.{name}" and env["WORLD_SIZE"] == "3"
        assert env["BERTOPS_TERMINATION_LOG"] == argo.RESULT_PATH
        assert main.image == CONFIG.image
        assert main.resources.requests == {"cpu": train.cpu, "memory": train.memory}
        assert main.security_context.read_only_root_filesystem is True
        assert pod.spec.service_account_name == CONFIG.service_account
        assert pod.spec.security_context.run_as_user == 1000

    def nodes() -> list[dict[str, Any]]:
        workflow = custom(kube).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "workflows", name
        )
        found = list(workflow["status"]["nodes"].values())
        # The controller writes the workflow's status after it created the rank pods.
        done = [n["phase"] for n in found if n["displayName"] == "rendezvous"] == ["Succeeded"]
        return found if done else []

    ranks = [
        n
        for n in wait_for(nodes, what="the rendezvous node Succeeded", log=controller.log)
        if n["type"] == "Pod" and n.get("templateName") == "train"
    ]
    assert len(ranks) == 3 and {n["phase"] for n in ranks} == {"Pending"}


def test_runtime_runs_a_step_through_the_controller(
    kube: Any, namespace: str, controller: WorkflowController
) -> None:
    """The Argo runtime creates the step's Workflow (owned by its object), the controller
    runs it (the test plays kubelet and wait container), and the runtime reads the step's
    result back from the node's output parameter."""
    import dataclasses

    _service_account(kube, namespace)
    (train,) = [s for s in argo_template.example_steps(namespace, replicas=1) if s.kind == "train"]
    owner: dict[str, Any] = {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": "BertTraining",
        "name": "run-1",
        "uid": "6d1f3c1e-0000-4000-8000-00000000abcd",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    request = dataclasses.replace(train, name="run-1-train-1", owner=owner)
    runtime = ArgoRuntime(CONFIG, Kube(kube))
    runtime.start(request)
    runtime.start(request)  # adopts its own Workflow: no duplicate, no error
    created = custom(kube).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "workflows", request.name
    )
    assert created["metadata"]["ownerReferences"][0]["uid"] == owner["uid"]
    assert runtime.observe(namespace, request.name, owner["uid"]).phase == StepPhase.RUNNING
    assert runtime.observe(namespace, request.name, "someone-else").phase == StepPhase.ABSENT

    (pod,) = wait_for(
        lambda: pods(kube, namespace, request.name), what="the train pod", log=controller.log
    )
    done = StepResult(kind="train", name=request.name, succeeded=True, metrics={"accuracy": 0.75})
    outputs = {"parameters": [{"name": "result", "value": done.compact_json()}], "exitCode": "0"}
    act_as_kubelet_and_wait_container(kube, namespace, request.name, pod, outputs)

    def finished() -> Any:
        found = runtime.observe(namespace, request.name, owner["uid"])
        return found if found.phase != StepPhase.RUNNING else None

    observed = wait_for(finished, what="the Workflow to finish", log=controller.log)
    assert observed.phase == StepPhase.SUCCEEDED, observed
    assert observed.result is not None and observed.result.metrics == {"accuracy": 0.75}
    assert runtime.stop(namespace, request.name) is True


@pytest.mark.parametrize(("exit_code", "runs"), [(2, 1), (3, 2), (1, 2)])
def test_controller_retries_per_exit_code(
    kube: Any, namespace: str, controller: WorkflowController, exit_code: int, runs: int
) -> None:
    """Argo itself applies the retry strategy: a step that exits 2 (bad input) fails the
    Workflow at once; one that exits 1 or 3 runs again (after a 1 s backoff here)."""
    import dataclasses

    _service_account(kube, namespace)
    config = dataclasses.replace(CONFIG, step_retry_base_seconds=1.0)
    (evaluate,) = [s for s in argo_template.example_steps(namespace) if s.kind == "evaluate"]
    name = f"exit-{exit_code}"
    body = argo.to_dict(argo.workflow(name, namespace, [evaluate], config))
    custom(kube).create_namespaced_custom_object(GROUP, VERSION, namespace, "workflows", body)
    (first,) = wait_for(
        lambda: pods(kube, namespace, name), what="the step pod", log=controller.log
    )
    act_as_kubelet_and_wait_container(
        kube, namespace, name, first, {"exitCode": str(exit_code)}, exit_code=exit_code
    )

    def settled() -> Any:
        found = pods(kube, namespace, name)
        if runs > 1:
            return found if len(found) == runs else None
        workflow = custom(kube).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "workflows", name
        )
        return found if workflow.get("status", {}).get("phase") == "Failed" else None

    assert len(wait_for(settled, what=f"{runs} run(s) of the step", log=controller.log)) == runs
