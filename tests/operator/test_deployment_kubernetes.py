"""BertDeployment with the kubernetes runtime on the real API server (no kubelet): the
operator applies the serving children (server and gateway Deployments, Services, the
routes ConfigMap, HPA, PDBs) with owner references, probes, restricted security
contexts and the model's manifest sha256; Ready and the endpoint wait for the gateway to
be available; a canary enters the routes only once its Deployment is available. The test
stands in for the Deployment controller by writing Deployment status."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from bertops.operator.kube import Kube
from tests.operator.serving_helpers import copy_artifact, deployment, model
from tests.server.artifacts import write_tiny_artifact
from tests.waiting import condition_of as condition
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def deployments(kube: Kube, namespace: str) -> dict[str, Any]:
    apps = client.AppsV1Api(kube.api_client)
    return {
        str(d.metadata and d.metadata.name): d
        for d in apps.list_namespaced_deployment(namespace).items
    }


def make_available(kube: Kube, namespace: str, name: str, replicas: int = 2) -> None:
    """What the Deployment controller would report once the pods are ready."""
    apps = client.AppsV1Api(kube.api_client)
    apps.patch_namespaced_deployment_status(
        name,
        namespace,
        {
            "status": {
                "replicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
            }
        },
    )


def test_serving_children_are_applied_owned_probed_and_routed(
    kube_layer: Kube, namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    start_operator(namespace, runtime="kubernetes", serving_image="registry.example/srv:test")
    v1 = write_tiny_artifact(tmp_path / "v1", "tiny-v1")
    kube_layer.create(model(namespace, "tiny-v1", v1))
    sha = wait_for(
        lambda: ((kube_layer.get("BertModel", namespace, "tiny-v1") or {}).get("status") or {}).get(
            "manifestSha256"
        ),
        what="tiny-v1 verified",
    )
    spec = deployment(namespace)
    spec["spec"]["serving"].update(autoscaling={"minReplicas": 2, "maxReplicas": 4})
    owner = kube_layer.create(spec)
    uid = owner["metadata"]["uid"]
    found = wait_for(
        lambda: (
            {"web-tiny-v1", "web-gateway"} <= set(deployments(kube_layer, namespace))
            and deployments(kube_layer, namespace)
        ),
        what="server and gateway Deployments",
    )
    server = found["web-tiny-v1"].to_dict()
    container = server["spec"]["template"]["spec"]["containers"][0]
    command = container["command"]
    assert command[command.index("--expect-manifest-sha256") + 1] == sha
    assert container["image"] == "registry.example/srv:test"
    assert container["readiness_probe"]["http_get"]["path"] == "/v2/health/ready"
    assert container["liveness_probe"]["http_get"]["path"] == "/v2/health/live"
    security = container["security_context"]
    assert security["run_as_non_root"] and not security["allow_privilege_escalation"]
    assert security["read_only_root_filesystem"] and security["capabilities"]["drop"] == ["ALL"]
    for kind, api_version, name in [
        ("Deployment", "apps/v1", "web-tiny-v1"),
        ("Deployment", "apps/v1", "web-gateway"),
        ("Service", "v1", "web-tiny-v1"),
        ("Service", "v1", "web-gateway"),
        ("ConfigMap", "v1", "web-routes"),
        ("HorizontalPodAutoscaler", "autoscaling/v2", "web-tiny-v1"),
        ("PodDisruptionBudget", "policy/v1", "web-tiny-v1"),
        ("PodDisruptionBudget", "policy/v1", "web-gateway"),
    ]:
        # The children are applied one after another, so the Deployments may exist
        # before the HPA and PDBs do.
        body = wait_for(
            partial(kube_layer.read, api_version, kind, namespace, name),
            what=f"{kind} {name}",
        )
        refs = body["metadata"]["ownerReferences"]
        assert [(r["kind"], r["uid"], r["controller"]) for r in refs] == [
            ("BertDeployment", uid, True)
        ], (kind, name)

    def status() -> dict[str, Any]:
        return (kube_layer.get("BertDeployment", namespace, "web") or {}).get("status") or {}

    ready = wait_for(lambda: condition({"status": status()}, "Ready"), what="a Ready condition")
    assert (ready["status"], ready["reason"]) == ("False", "ServersStarting")
    assert "endpoint" not in status()

    make_available(kube_layer, namespace, "web-tiny-v1")
    make_available(kube_layer, namespace, "web-gateway")
    wait_for(
        lambda: (condition({"status": status()}, "Ready") or {}).get("status") == "True",
        what="Ready once the gateway is available",
    )
    assert status()["endpoint"] == f"http://web-gateway.{namespace}.svc:8000"

    # A second model: its server is applied at once, routed only once available.
    kube_layer.create(model(namespace, "tiny-v2", copy_artifact(v1, tmp_path / "v2", "tiny-v2")))
    wait_for(lambda: "web-tiny-v2" in deployments(kube_layer, namespace), what="canary server")

    def routes() -> dict[str, Any]:
        body = kube_layer.read("v1", "ConfigMap", namespace, "web-routes") or {}
        table: dict[str, Any] = json.loads(body["data"]["routes.json"])
        return table

    wait_for(lambda: status().get("canaryModel") == "tiny-v2", what="canary in status")
    assert "canary" not in routes()
    make_available(kube_layer, namespace, "web-tiny-v2")
    table = wait_for(lambda: routes().get("canary") and routes(), what="canary routed")
    assert table["canary"]["url"] == f"http://web-tiny-v2.{namespace}.svc:8080"
    assert table["canaryWeight"] == 30 and table["stable"]["name"] == "tiny-v1"
    assert (kube_layer.get("BertDeployment", namespace, "web") or {})["spec"] == owner["spec"]

    # A manual promotion (the annotation, not the spec): the canary's server becomes
    # stable's by a routes change alone; the old stable's is kept to drain.
    kube_layer.custom.patch_namespaced_custom_object(
        "bertops.io",
        "v1alpha1",
        namespace,
        "bertdeployments",
        "web",
        {"metadata": {"annotations": {"bertops.io/rollout-action": "promote/1"}}},
    )
    wait_for(lambda: status().get("stableModel") == "tiny-v2", what="promoted by hand")
    assert status()["handledActions"] == ["promote/1"]
    wait_for(lambda: routes()["stable"]["name"] == "tiny-v2", what="routes to the new stable")
    assert "canary" not in routes() and "web-tiny-v1" in deployments(kube_layer, namespace)
    after = kube_layer.get("BertDeployment", namespace, "web") or {}
    assert after["spec"] == owner["spec"]
    assert after["metadata"]["generation"] == owner["metadata"]["generation"]
