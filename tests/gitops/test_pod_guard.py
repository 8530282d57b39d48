"""The pod guard (gitops/operator/base/pod-guard.yaml) on the real API server with RBAC
on: as the operator's ServiceAccount, every object the operator really builds (a 2-rank
step's ConfigMap, DDP NetworkPolicy and Job; a deployment's servers and gateway with
logs, feedback credentials and an HPA) passes a server-side dry-run, and each way of
turning one of them into a foothold (another image, ServiceAccount, a hostPath or other
Secret, privilege, an API token, host network, someone else's ConfigMap, a wider
NetworkPolicy) is refused with 403 and the policy's message."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bertops.api.dataset import BertDatasetSpec
from bertops.api.deployment import BertDeploymentSpec
from bertops.api.steps import PrepareStep
from bertops.operator.config import OperatorConfig
from bertops.operator.deployment import server_manifests, serving_objects
from bertops.operator.objects import ObjectRef
from bertops.operator.runtime import manifests
from bertops.operator.runtime.base import StepRequest
from tests.gitops.test_rbac import TEAM, forbidden
from tests.integration import manifests as m

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["as_operator", "installed", "operator_kubeconfig"]
from tests.gitops.test_rbac import as_operator, installed, operator_kubeconfig  # noqa: E402

CONFIG = OperatorConfig(runtime="kubernetes")  # the images, claim and step identity shipped
MODEL = server_manifests.ModelVersion(
    "tiny-v1", f"/artifacts/{TEAM}/models/v1", "a" * 64, ("a", "b")
)


def step_objects() -> list[dict[str, Any]]:
    dataset = BertDatasetSpec.model_validate(m.dataset()["spec"])
    spec = PrepareStep(name="guard-train-g1", dataset=dataset, output_uri=f"/artifacts/{TEAM}/r")
    request = StepRequest(name="guard-train-g1", namespace=TEAM, spec=spec, replicas=2)
    return [
        manifests.spec_configmap(request, CONFIG),
        manifests.ddp_network_policy(request),
        manifests.job(request, CONFIG),
    ]


def deployment_objects() -> list[dict[str, Any]]:
    owner = ObjectRef(name="guard", namespace=TEAM, generation=1, uid="u-1", kind="BertDeployment")
    spec = BertDeploymentSpec.model_validate(
        {
            "model": {"ref": {"name": "tiny-v1"}},
            "serving": {"predictionLog": "hash", "feedback": {"credentialsSecret": "labelers"}},
            "retrain": {"enabled": True},
        }
    )
    table = server_manifests.routes(owner, MODEL)
    found = serving_objects.children(
        owner, spec, table, [MODEL], server_manifests.ServingConfig.from_operator(CONFIG)
    )
    return [o for o in found if o["kind"] in ("ConfigMap", "Deployment")]


def create(api: client.ApiClient, body: dict[str, Any]) -> None:
    """A server-side dry-run create as the operator (admission runs, nothing is stored)."""
    body = copy.deepcopy(body)
    body["metadata"].pop("ownerReferences", None)  # owners that do not exist here
    kind, namespace = body["kind"], body["metadata"].get("namespace", TEAM)
    calls: dict[str, Callable[..., Any]] = {
        "Job": client.BatchV1Api(api).create_namespaced_job,
        "Deployment": client.AppsV1Api(api).create_namespaced_deployment,
        "ConfigMap": client.CoreV1Api(api).create_namespaced_config_map,
        "NetworkPolicy": client.NetworkingV1Api(api).create_namespaced_network_policy,
    }
    calls[kind](namespace, body, dry_run="All")


def test_everything_the_operator_builds_is_admitted(as_operator: client.ApiClient) -> None:
    built = [*step_objects(), *deployment_objects()]
    kinds = sorted({o["kind"] for o in built})
    assert kinds == ["ConfigMap", "Deployment", "Job", "NetworkPolicy"]
    gateway = next(o for o in built if o["metadata"]["name"] == "guard-gateway")
    volumes = {v["name"] for v in gateway["spec"]["template"]["spec"]["volumes"]}
    assert {"feedback", "feedback-credentials", "routes"} <= volumes
    for body in built:
        try:
            create(as_operator, body)
        except ApiException as error:
            raise AssertionError(
                f"{body['kind']} {body['metadata']['name']}: {error.body}"
            ) from error


def pod(body: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = body["spec"]["template"]["spec"]
    return found  # the Job's own pod spec, changed in place


def job() -> dict[str, Any]:
    return copy.deepcopy(step_objects()[2])


def changed(change: Callable[[dict[str, Any]], object], body: dict[str, Any] | None = None) -> Any:
    body = body if body is not None else job()
    change(body)
    return body


FOOTHOLDS: list[tuple[str, Callable[[], dict[str, Any]], str]] = [
    (
        "an image from elsewhere",
        lambda: changed(lambda j: pod(j)["containers"][0].update(image="evil.example/x:1")),
        "may only run images from ghcr.io/bertops/",
    ),
    (
        "another ServiceAccount",
        lambda: changed(lambda j: pod(j).update(serviceAccountName="default")),
        "may only run pods as bertops-step",
    ),
    (
        "an API token",
        lambda: changed(lambda j: pod(j).update(automountServiceAccountToken=True)),
        "never mount an API token",
    ),
    (
        "a hostPath volume",
        lambda: changed(
            lambda j: pod(j)["volumes"].append({"name": "root", "hostPath": {"path": "/"}})
        ),
        "may mount only ConfigMaps",
    ),
    (
        "another claim",
        lambda: changed(
            lambda j: pod(j)["volumes"].append(
                {"name": "x", "persistentVolumeClaim": {"claimName": "someone-elses"}}
            )
        ),
        "may mount only ConfigMaps",
    ),
    (
        "a Secret volume",
        lambda: changed(
            lambda j: pod(j)["volumes"].append({"name": "x", "secret": {"secretName": "db"}})
        ),
        "may mount only ConfigMaps",
    ),
    (
        "privilege",
        lambda: changed(
            lambda j: pod(j)["containers"][0]["securityContext"].update(
                privileged=True, allowPrivilegeEscalation=True
            )
        ),
        "drop every capability",
    ),
    (
        "an added capability",
        lambda: changed(
            lambda j: pod(j)["containers"][0]["securityContext"]["capabilities"].update(
                add=["NET_ADMIN"]
            )
        ),
        "drop every capability",
    ),
    (
        "the host network",
        lambda: changed(lambda j: pod(j).update(hostNetwork=True)),
        "no host namespace",
    ),
    (
        "root",
        lambda: changed(lambda j: pod(j)["securityContext"].update(runAsNonRoot=False)),
        "non-root",
    ),
]


@pytest.fixture(scope="module")
def guarding(as_operator: client.ApiClient) -> client.ApiClient:
    """The operator's client once the policies are in force: the API server compiles an
    applied (or re-applied) policy in the background, so the first requests after an
    apply may still pass."""
    hostpath = FOOTHOLDS[3][1]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            create(as_operator, hostpath())
        except ApiException as error:
            if error.status == 403:
                return as_operator
            raise
        time.sleep(0.5)
    raise AssertionError("the pod guard was not in force within 30 s")


@pytest.mark.parametrize(("what", "build", "message"), FOOTHOLDS, ids=[f[0] for f in FOOTHOLDS])
def test_a_pod_unlike_the_operators_own_is_refused(
    guarding: client.ApiClient, what: str, build: Callable[[], dict[str, Any]], message: str
) -> None:
    assert message in forbidden(lambda: create(guarding, build()))


def test_only_its_own_configmaps_and_narrow_network_policies(
    guarding: client.ApiClient, kube: Any
) -> None:
    as_operator = guarding
    core = client.CoreV1Api(kube)
    users = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="users-config"), data={"a": "1"})
    try:
        core.create_namespaced_config_map(TEAM, users)
    except ApiException as error:
        if error.status != 409:
            raise
    mine = client.CoreV1Api(as_operator)
    message = forbidden(
        lambda: mine.patch_namespaced_config_map("users-config", TEAM, {"data": {"a": "2"}})
    )
    assert "only its own ConfigMaps" in message
    assert "only its own" in forbidden(
        lambda: mine.delete_namespaced_config_map("users-config", TEAM)
    )
    unlabelled = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}}
    assert "only its own" in forbidden(lambda: create(as_operator, unlabelled))
    policy = step_objects()[1]
    wide = copy.deepcopy(policy)
    wide["spec"]["ingress"] = [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]
    assert "only port 29500" in forbidden(lambda: create(as_operator, wide))
    other_port = copy.deepcopy(policy)
    other_port["spec"]["egress"][0]["ports"] = [{"protocol": "TCP", "port": 443}]
    assert "only port 29500" in forbidden(lambda: create(as_operator, other_port))
    everything = copy.deepcopy(policy)
    everything["spec"]["podSelector"] = {}
    assert "only port 29500" in forbidden(lambda: create(as_operator, everything))
