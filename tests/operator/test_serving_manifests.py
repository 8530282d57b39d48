"""The serving objects of a BertDeployment on the kubernetes runtime: model servers
pinned to a manifest sha256, probes, the restricted security context, owner references,
routes, gateway, autoscaler and disruption budgets, checked field by field and by the
real API server (server-side dry-run) of the embedded control plane."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bertops.api.deployment import BertDeploymentSpec
from bertops.api.limits import request_body_limit
from bertops.api.routes import Routes
from bertops.operator.config import OperatorConfig
from bertops.operator.deployment import server_manifests, serving_objects
from bertops.operator.deployment.gateway_manifests import CREDENTIALS_MOUNT, feedback_access_flags
from bertops.operator.deployment.local import LocalServing
from bertops.operator.deployment.target import feedback_uri, predictions_uri
from bertops.operator.kube import Kube
from bertops.operator.objects import ObjectRef
from bertops.operator.runtime.manifests import container_security_context
from tests.integration import manifests as m

IMAGE = "registry.example/bertops-server:test"
STABLE = server_manifests.ModelVersion(
    "sentiment-v1", "/artifacts/ml/models/v1/g1", "a" * 64, ("negative", "positive")
)
CANARY = server_manifests.ModelVersion("sentiment-v2", "/artifacts/ml/models/v2/g1", "b" * 64)
RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def spec(**serving_fields: Any) -> BertDeploymentSpec:
    return BertDeploymentSpec.model_validate(
        {"model": {"selector": {"family": "sentiment"}}, "serving": serving_fields}
    )


def retraining(include_feedback: bool = True) -> BertDeploymentSpec:
    return BertDeploymentSpec.model_validate(
        {
            "model": {"selector": {"family": "sentiment"}},
            "retrain": {"enabled": True, "includeFeedback": include_feedback},
        }
    )


def owner(namespace: str = "ml", uid: str = "1234-uid") -> ObjectRef:
    return ObjectRef(
        name="sentiment", namespace=namespace, generation=1, uid=uid, kind="BertDeployment"
    )


def objects(
    owner_ref: ObjectRef,
    deployment_spec: BertDeploymentSpec,
    config: server_manifests.ServingConfig | None = None,
) -> list[dict[str, Any]]:
    table = server_manifests.routes(owner_ref, STABLE, CANARY, 10, revision="3")
    return serving_objects.children(
        owner_ref,
        deployment_spec,
        table,
        [STABLE, CANARY],
        config or server_manifests.ServingConfig(image=IMAGE),
    )


def by_kind(found: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in found if o["kind"] == kind]


def test_server_pods_are_pinned_probed_and_restricted() -> None:
    found = objects(owner(), spec(replicas=2, resources={"cpu": "2500m", "memory": "1Gi"}))
    server = next(
        o for o in by_kind(found, "Deployment") if o["metadata"]["name"] == "sentiment-sentiment-v1"
    )
    pod = server["spec"]["template"]["spec"]
    container = pod["containers"][0]
    command = container["command"]
    assert command[:3] == ["bertops", "server", "serve"]
    flag = {command[i]: command[i + 1] for i in range(3, len(command) - 1, 2)}
    assert flag["--model"] == STABLE.artifact_uri
    assert flag["--expect-manifest-sha256"] == "a" * 64
    assert flag["--name"] == "sentiment-v1" and flag["--threads"] == "2"
    assert flag["--prediction-log-path"] == "/var/bertops/predictions/$(POD_NAME).jsonl"
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert container["securityContext"] == container_security_context()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"] == RESTRICTED_POD
    assert pod["automountServiceAccountToken"] is False
    mounts = {v["name"]: v for v in container["volumeMounts"]}
    assert mounts["artifacts"]["readOnly"] is True  # models are never written by servers
    # The namespace's PVC is its own folder of the store, mounted where the operator sees
    # that folder: the model URI resolves, and no other namespace's file is there.
    assert mounts["artifacts"]["mountPath"] == "/artifacts/ml"
    assert STABLE.artifact_uri.startswith(mounts["artifacts"]["mountPath"] + "/")
    assert mounts["predictions"]["subPath"] == "deployments/sentiment/predictions"
    # The folder is made as the pod's user first: a subPath the kubelet makes is root's.
    (init,) = pod["initContainers"]
    assert init["command"] == ["mkdir", "-p", "/store/deployments/sentiment/predictions"]
    assert init["volumeMounts"] == [{"name": "predictions", "mountPath": "/store"}]
    assert init["securityContext"] == container_security_context()
    assert container["resources"]["requests"] == {"cpu": "2500m", "memory": "1Gi"}
    assert server["spec"]["replicas"] == 2
    assert server["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_every_object_is_owned_and_labelled() -> None:
    found = objects(owner(), spec())
    for item in found:
        assert item["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "bertops.io/v1alpha1",
                "kind": "BertDeployment",
                "name": "sentiment",
                "uid": "1234-uid",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert item["metadata"]["labels"]["bertops.io/bertdeployment"] == "sentiment"
        assert item["metadata"]["namespace"] == "ml"
    kinds = [o["kind"] for o in found]
    assert kinds == [
        "Deployment",
        "Service",
        "Deployment",
        "Service",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ]  # one server replica: no budget for the servers (only the 2 gateways), no autoscaler


def test_routes_configmap_points_the_gateway_at_the_servers() -> None:
    found = objects(owner(), spec())
    configmap = by_kind(found, "ConfigMap")[0]
    table = Routes.model_validate(json.loads(configmap["data"]["routes.json"]))
    assert table.stable.url == "http://sentiment-sentiment-v1.ml.svc:8080"
    assert table.stable.model == "sentiment-v1" and table.stable.labels == ["negative", "positive"]
    assert table.canary is not None and table.canary.labels is None
    assert table.canary_weight == 10 and table.revision == "3"
    assert table.override_header is None  # nobody outside can force the canary
    gateway = next(
        o for o in by_kind(found, "Deployment") if o["metadata"]["name"] == "sentiment-gateway"
    )
    pod = gateway["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == [
        "bertops",
        "server",
        "gateway",
        "--routes",
        "/etc/bertops/routes/routes.json",
        "--port",
        "8000",
        # What the servers take (64 texts of 5000 characters by default), and how many
        # such bodies it holds at once.
        "--max-body-bytes",
        str(request_body_limit(64, 5000)),
        "--limit-concurrency",
        "32",
        # Its counters name the canary: on a listener of their own, not the public port.
        "--metrics-port",
        "9091",
        # Feedback: no credentials named and anonymous off, so the gateway refuses it.
        "--feedback-labels-per-minute",
        "600",
        "--feedback-bytes-per-hour",
        str(16 << 20),
    ]
    assert "--admin-token" not in container["command"]
    assert container["ports"] == [
        {"name": "http", "containerPort": 8000},
        {"name": "metrics", "containerPort": 9091},
    ]
    annotations = gateway["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9091"
    (service,) = [
        o for o in by_kind(found, "Service") if o["metadata"]["name"] == "sentiment-gateway"
    ]
    assert [p["port"] for p in service["spec"]["ports"]] == [8000, 9091]
    assert pod["volumes"][0] == {"name": "routes", "configMap": {"name": "sentiment-routes"}}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"] == container_security_context()
    assert pod["securityContext"] == RESTRICTED_POD


def test_autoscaler_and_budgets() -> None:
    found = objects(owner(), spec(autoscaling={"minReplicas": 2, "maxReplicas": 6}))
    hpas = by_kind(found, "HorizontalPodAutoscaler")
    assert [h["spec"]["scaleTargetRef"]["name"] for h in hpas] == [
        "sentiment-sentiment-v1",
        "sentiment-sentiment-v2",
    ]
    assert hpas[0]["spec"]["minReplicas"] == 2 and hpas[0]["spec"]["maxReplicas"] == 6
    assert hpas[0]["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert all(
        "replicas" not in d["spec"]
        for d in by_kind(found, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "model-server"
    )
    budgets = by_kind(found, "PodDisruptionBudget")
    assert sorted(b["metadata"]["name"] for b in budgets) == [
        "sentiment-gateway",
        "sentiment-sentiment-v1",
        "sentiment-sentiment-v2",
    ]
    assert all(b["spec"]["maxUnavailable"] == 1 for b in budgets)


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("sentiment", "v1"), "sentiment-v1"),
        (("9lives", "v1"), "m-9lives-v1"),  # a Service name must start with a letter
        (("a" * 40, "b" * 40), None),
    ],
)
def test_object_names_are_service_safe(parts: tuple[str, ...], expected: str | None) -> None:
    name = server_manifests.object_name(*parts)
    assert len(name) <= 63 and name[0].isalpha()
    if expected is not None:
        assert name == expected
    else:
        assert name != server_manifests.object_name(
            "a" * 40, "b" * 41
        )  # the digest keeps it unique


def test_config_from_the_operator() -> None:
    config = server_manifests.ServingConfig.from_operator(
        OperatorConfig(artifact_pvc="store", artifact_mount="/data"), image=IMAGE
    )
    assert (config.artifact_pvc, config.artifact_mount, config.image) == ("store", "/data", IMAGE)


def gateway_of(found: list[dict[str, Any]]) -> dict[str, Any]:
    gateway = next(
        o for o in by_kind(found, "Deployment") if o["metadata"]["name"].endswith("gateway")
    )
    return gateway


def test_gateway_keeps_labelled_feedback_only_while_retraining_wants_it() -> None:
    for quiet in (spec(), retraining(include_feedback=False)):
        pod = gateway_of(objects(owner(), quiet))["spec"]["template"]["spec"]
        assert "--feedback-log" not in pod["containers"][0]["command"]
        assert "feedback" not in {v["name"] for v in pod["volumes"]}
    pod = gateway_of(objects(owner(), retraining()))["spec"]["template"]["spec"]
    container = pod["containers"][0]
    command = container["command"]
    assert command[command.index("--feedback-log") + 1] == "/var/bertops/feedback/$(POD_NAME).jsonl"
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in (
        container["env"]
    )
    mounts = {v["name"]: v for v in container["volumeMounts"]}
    assert mounts["feedback"]["subPath"] == "deployments/sentiment/feedback"
    assert mounts["feedback"].get("readOnly") is not True
    (init,) = pod["initContainers"]
    assert init["command"] == ["mkdir", "-p", "/store/deployments/sentiment/feedback"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["feedback"]["persistentVolumeClaim"] == {"claimName": "bertops-artifacts"}


def test_both_runtimes_write_where_drift_and_retraining_read(tmp_path: Path) -> None:
    config = OperatorConfig(artifact_root=str(tmp_path / "store"), state_dir=tmp_path / "state")
    predictions = predictions_uri(config, "ml", "sentiment")
    feedback = feedback_uri(config, "ml", "sentiment")
    assert predictions == f"{tmp_path}/store/ml/deployments/sentiment/predictions"
    assert feedback == f"{tmp_path}/store/ml/deployments/sentiment/feedback"
    # The kubernetes subPaths are the same folders below the namespace's artifact PVC
    # (its folder of the store).
    assert server_manifests.deployment_subpath("sentiment", server_manifests.PREDICTIONS) == (
        predictions.removeprefix(f"{tmp_path}/store/ml/")
    )
    local = LocalServing(config)
    command = local._server_command(owner(), spec(), STABLE)
    path = command[command.index("--prediction-log-path") + 1]
    assert path == f"{predictions}/sentiment-sentiment-v1.jsonl"
    off = local._server_command(owner(), spec(prediction_log="off"), STABLE)
    assert "--prediction-log-path" not in off
    home = tmp_path / "home"
    access = feedback_access_flags(spec().serving.feedback, str(home / "feedback-credentials"))
    assert local._gateway_flags(owner(), spec(), home) == access
    assert local._gateway_flags(owner(), retraining(include_feedback=False), home) == access
    assert local._gateway_flags(owner(), retraining(), home) == [
        *access,
        "--feedback-log",
        f"{feedback}/feedback.jsonl",
    ]


def test_the_gateway_mounts_the_named_feedback_credentials_and_nothing_else() -> None:
    plain = gateway_of(objects(owner(), spec()))["spec"]["template"]["spec"]
    assert "feedback-credentials" not in {v["name"] for v in plain["volumes"]}
    assert "--feedback-credentials" not in plain["containers"][0]["command"]
    named = spec(feedback={"credentialsSecret": "labelers", "labelsPerMinute": 60})
    pod = gateway_of(objects(owner(), named))["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    assert command[command.index("--feedback-credentials") + 1] == CREDENTIALS_MOUNT
    assert command[command.index("--feedback-labels-per-minute") + 1] == "60"
    assert "--feedback-anonymous" not in command
    volumes = {v["name"]: v for v in pod["volumes"]}
    # Read by the kubelet (the operator has no right to Secrets), readable by the pod's
    # fsGroup only; a missing Secret refuses feedback but never stops serving.
    assert volumes["feedback-credentials"]["secret"] == {
        "secretName": "labelers",
        "defaultMode": 0o440,
        "optional": True,
    }
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["feedback-credentials"] == {
        "name": "feedback-credentials",
        "mountPath": CREDENTIALS_MOUNT,
        "readOnly": True,
    }
    anonymous = spec(feedback={"anonymous": True})
    command = gateway_of(objects(owner(), anonymous))["spec"]["template"]["spec"]["containers"][0]
    assert "--feedback-anonymous" in command["command"]


@pytest.mark.integration
def test_objects_pass_server_side_dry_run(kube_layer: Kube, namespace: str) -> None:
    created = kube_layer.create(
        {**m.deployment(), "metadata": {"name": "sentiment", "namespace": namespace}}
    )
    real = ObjectRef(
        name="sentiment",
        namespace=namespace,
        generation=1,
        uid=created["metadata"]["uid"],
        kind="BertDeployment",
    )
    for deployment_spec in (
        spec(),
        spec(replicas=3, prediction_log="off"),
        spec(autoscaling={"minReplicas": 2, "maxReplicas": 4}),
        retraining(),
    ):
        found = objects(real, deployment_spec)
        for item in found:
            applied = kube_layer.apply(item, dry_run=True)
            # What the API server would store keeps our owner and security settings.
            assert applied["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
            if item["kind"] == "Deployment":
                pod = applied["spec"]["template"]["spec"]
                assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
                assert pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
                assert pod["containers"][0]["readinessProbe"]["httpGet"]["port"] == "http"
        assert {o["kind"] for o in found} >= {"Deployment", "Service", "ConfigMap"}
    assert kube_layer.read("apps/v1", "Deployment", namespace, "sentiment-gateway") is None


def pod(ip: str | None, ready: str) -> dict[str, Any]:
    return {"status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}}


def test_the_analysis_scrapes_each_ready_gateway_pod_not_the_service() -> None:
    """Each replica counts on its own: through the Service the sums jumped between them."""
    from bertops.operator.deployment.kubernetes import metrics_urls

    service = "http://sentiment-gateway.ml.svc:9091/metrics"
    pods = [pod("10.4.0.9", "True"), pod("10.4.0.7", "True"), pod("10.4.0.8", "False")]
    # The metrics listener of each pod, never the public port (it does not serve them).
    assert metrics_urls([*pods, pod(None, "True")], service) == (
        "http://10.4.0.7:9091/metrics",
        "http://10.4.0.9:9091/metrics",
    )
    assert metrics_urls([pod("10.4.0.8", "False")], service) == (service,)
    assert metrics_urls([], service) == (service,)


def test_a_clients_feedback_reaches_the_gateway_replica_that_answered_it() -> None:
    """Each gateway replica keeps its own answers: the Service keeps a client on one."""
    service = next(
        o
        for o in by_kind(objects(owner(), spec()), "Service")
        if o["metadata"]["name"] == "sentiment-gateway"
    )
    assert service["spec"]["sessionAffinity"] == "ClientIP"
