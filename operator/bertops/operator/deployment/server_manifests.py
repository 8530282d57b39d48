"""Pure builders of the Kubernetes objects that serve a BertDeployment: one model-server
Deployment + Service per model version in play (stable, and the canary during a rollout),
optionally an HPA per server and PodDisruptionBudgets, and the gateway's routes table.
Every object is owned by the BertDeployment, so deleting it deletes them all. Also the
names, labels, ports and pod template that the gateway's objects
(:mod:`bertops.operator.deployment.gateway_manifests`) share; every serving object in apply
order is :mod:`bertops.operator.deployment.serving_objects`'s ``children``.

Servers are named after the model version, not the role: promoting a canary only
rewrites the routes (the canary's pods become stable's without a restart), and the old
stable's objects are then deleted.

No I/O: the BertDeployment reconciler (with the state in
:mod:`bertops.operator.rollout.state`) decides what is served and applies these.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from bertops.api.deployment import BertDeploymentSpec
from bertops.api.routes import Backend, Routes, Sticky
from bertops.api.server_command import server_args
from bertops.operator.config import OperatorConfig
from bertops.operator.objects import ObjectRef
from bertops.operator.runtime.manifests import (
    container_security_context,
    folder_init_container,
    pod_security_context,
    store_env_from,
    tenant_mount,
)

SERVER_PORT = 8080
GATEWAY_PORT = 8000
ROUTES_FILE = "routes.json"
PREDICTIONS_MOUNT = "/var/bertops/predictions"
PREDICTIONS = "predictions"
FEEDBACK = "feedback"
DEPLOYMENT_LABEL = "bertops.io/bertdeployment"
MODEL_LABEL = "bertops.io/model"
COMPONENT_LABEL = "app.kubernetes.io/component"
MAX_NAME = 63


@dataclass(frozen=True)
class ServingConfig:
    """Where serving pods come from; built from the operator's settings."""

    image: str = "ghcr.io/bertops/bertops-server:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    artifact_pvc: str = "bertops-artifacts"
    artifact_mount: str = "/artifacts"
    gateway_replicas: int = 2
    # The artifact root when it is in an object store (else None: the PVC): serving pods
    # then mount no volume of it, take its endpoint and key from ``store_env``
    # (runtime.manifests.store_env_from) and ship their logs there.
    remote_root: str | None = None
    store_env: str = "bertops-artifacts-s3"

    @classmethod
    def from_operator(cls, config: OperatorConfig, **overrides: Any) -> ServingConfig:
        settings: dict[str, Any] = {
            "image_pull_policy": config.image_pull_policy,
            "artifact_pvc": config.artifact_pvc,
            "artifact_mount": config.artifact_mount,
            "remote_root": config.artifact_root if config.remote_store else None,
            "store_env": config.artifact_store_env,
        }
        settings.update(overrides)
        return cls(**settings)

    def log_uri(self, namespace: str, deployment: str, kind: str) -> str:
        """The object-store folder of a deployment's ``kind`` logs (as the operator's
        :func:`bertops.operator.deployment.target.predictions_uri`); needs ``remote_root``."""
        assert self.remote_root is not None
        return "/".join(
            [self.remote_root.rstrip("/"), namespace, *deployment_parts(deployment, kind)]
        )


@dataclass(frozen=True)
class ModelVersion:
    """What serving needs of a Ready BertModel."""

    name: str
    artifact_uri: str
    manifest_sha256: str
    labels: tuple[str, ...] = ()


def deployment_parts(name: str, kind: str) -> tuple[str, str, str]:
    """Where a deployment's ``kind`` files (:data:`PREDICTIONS`, :data:`FEEDBACK`) live
    below its namespace's folder of the artifact store: the same parts give the PVC
    subPath here and the URI in :func:`bertops.operator.deployment.target.predictions_uri`
    (a namespace's artifact PVC is its own folder, ``<root>/<namespace>``), so both
    runtimes write where a drift check and a retraining read."""
    return ("deployments", name, kind)


def deployment_subpath(name: str, kind: str) -> str:  # in its namespace's artifact PVC
    return "/".join(deployment_parts(name, kind))


def object_name(*parts: str) -> str:
    """A Service-safe name (RFC 1035 label: starts with a letter, at most 63 characters)
    from parts; too long a name keeps its head and gains a digest, so it stays unique."""
    raw = "-".join(parts)
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-") or "x"
    if not name[0].isalpha():
        name = f"m-{name}"
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        name = f"{name[: MAX_NAME - 9].rstrip('-')}-{digest}"
    return name


def server_name(deployment: str, model: str) -> str:
    return object_name(deployment, model)


def gateway_name(deployment: str) -> str:
    return object_name(deployment, "gateway")


def routes_name(deployment: str) -> str:
    return object_name(deployment, "routes")


def object_labels(owner: ObjectRef, component: str, model: str | None = None) -> dict[str, str]:
    found = {
        "app.kubernetes.io/part-of": "bertops",
        COMPONENT_LABEL: component,
        DEPLOYMENT_LABEL: owner.name,
    }
    if model is not None:
        found[MODEL_LABEL] = model
    return found


def object_metadata(owner: ObjectRef, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [owner.owner_reference()],
    }


def http_probe(path: str, port: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _threads(cpu: str) -> int:
    cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return max(1, math.floor(cores))


def _server_container(
    spec: BertDeploymentSpec, model: ModelVersion, config: ServingConfig, owner: ObjectRef
) -> dict[str, Any]:
    serving = spec.serving
    command = [
        "bertops", "server", "serve", "--port", str(SERVER_PORT),
        *server_args(
            serving,
            model_uri=model.artifact_uri,
            manifest_sha256=model.manifest_sha256,
            name=model.name,
            threads=_threads(serving.resources.cpu),
        ),
    ]  # fmt: skip
    mounts: list[dict[str, Any]] = [
        {
            "name": "artifacts",
            "mountPath": tenant_mount(config.artifact_mount, owner.namespace),
            "readOnly": True,
        },
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if config.remote_root is not None:  # the model and the log are in the object store
        mounts = [m for m in mounts if m["name"] != "artifacts"]
    if serving.prediction_log != "off":
        # $(POD_NAME) is expanded by the kubelet: one log per replica, no two writers.
        if config.remote_root is not None:  # spooled in /tmp, shipped (server.logship)
            folder = config.log_uri(owner.namespace, owner.name, PREDICTIONS)
            command += ["--prediction-log-path", f"{folder}/$(POD_NAME).jsonl"]
        else:
            command += ["--prediction-log-path", f"{PREDICTIONS_MOUNT}/$(POD_NAME).jsonl"]
            mounts.append({"name": "predictions", "mountPath": PREDICTIONS_MOUNT})
    resources = serving.resources
    limits: dict[str, Any] = {"memory": resources.memory}
    requests: dict[str, Any] = {"cpu": resources.cpu, "memory": resources.memory}
    if resources.gpu:
        limits["nvidia.com/gpu"] = requests["nvidia.com/gpu"] = resources.gpu
    return {
        "name": "server",
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": command,
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "BERTOPS_HOME", "value": "/tmp/bertops"},  # writable: root fs is not
        ],
        "ports": [{"name": "http", "containerPort": SERVER_PORT}],
        # Ready only once the model is verified, loaded and warm; live while the process
        # serves at all (loading a large model must not get it killed).
        "readinessProbe": http_probe("/v2/health/ready", "http", 5, 3),
        "livenessProbe": http_probe("/v2/health/live", "http", 10, 6),
        "resources": {"requests": requests, "limits": limits},
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
        **({"envFrom": store_env_from(config.store_env)} if config.remote_root else {}),
    }


def pod_spec(
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    init_containers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # serving never talks to the API server
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": containers,
        "volumes": volumes,
        "terminationGracePeriodSeconds": 45,  # > the servers' 30 s drain
    }
    if init_containers:
        spec["initContainers"] = init_containers
    return spec


def server_deployment(
    owner: ObjectRef, spec: BertDeploymentSpec, model: ModelVersion, config: ServingConfig
) -> dict[str, Any]:
    """The model server Deployment of one model version."""
    name = server_name(owner.name, model.name)
    labels = object_labels(owner, "model-server", model.name)
    volumes: list[dict[str, Any]] = [
        {
            "name": "artifacts",
            "persistentVolumeClaim": {"claimName": config.artifact_pvc, "readOnly": True},
        },
        {"name": "tmp", "emptyDir": {}},
    ]
    if config.remote_root is not None:
        volumes = [{"name": "tmp", "emptyDir": {}}]
    elif spec.serving.prediction_log != "off":
        volumes.append(
            {"name": "predictions", "persistentVolumeClaim": {"claimName": config.artifact_pvc}}
        )
    # Only the predictions of this deployment are writable, under its own folder.
    container = _server_container(spec, model, config, owner)
    init: list[dict[str, Any]] = []
    for mount in container["volumeMounts"]:
        if mount["name"] == "predictions":
            mount["subPath"] = deployment_subpath(owner.name, PREDICTIONS)
            init.append(
                folder_init_container(
                    "predictions", mount["subPath"], config.image, config.image_pull_policy
                )
            )
    body: dict[str, Any] = {
        "selector": {"matchLabels": labels},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "template": {"metadata": {"labels": labels}, "spec": pod_spec([container], volumes, init)},
    }
    if spec.serving.autoscaling is None:
        body["replicas"] = spec.serving.replicas  # with an HPA, the HPA owns the count
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_metadata(owner, name, labels),
        "spec": body,
    }


def cluster_service(
    owner: ObjectRef, name: str, labels: dict[str, str], port: int
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(owner, name, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
    }


def server_service(owner: ObjectRef, model: ModelVersion) -> dict[str, Any]:
    labels = object_labels(owner, "model-server", model.name)
    return cluster_service(owner, server_name(owner.name, model.name), labels, SERVER_PORT)


def backend(owner: ObjectRef, model: ModelVersion) -> Backend:
    host = f"{server_name(owner.name, model.name)}.{owner.namespace}.svc"
    return Backend(
        name=model.name,
        url=f"http://{host}:{SERVER_PORT}",
        model=model.name,
        labels=list(model.labels) or None,
    )


def routes(
    owner: ObjectRef,
    stable: ModelVersion,
    canary: ModelVersion | None = None,
    weight: int = 0,
    shadow: ModelVersion | None = None,
    revision: str | None = None,
    *,
    sticky: Literal["none", "header", "cookie"] = "none",
    compare: bool = False,
) -> Routes:
    """The gateway's routes for this state of the rollout (no override header: nobody
    outside can steer traffic onto a canary)."""
    return Routes(
        stable=backend(owner, stable),
        canary=backend(owner, canary) if canary else None,
        canary_weight=weight if canary else 0,
        shadow=backend(owner, shadow) if shadow else None,
        revision=revision,
        sticky=Sticky(mode=sticky),
        compare=compare and canary is not None,
    )


def keeps_feedback(spec: BertDeploymentSpec | None) -> bool:  # for retraining
    return spec is not None and spec.retrain.enabled and spec.retrain.include_feedback


def autoscaler(
    owner: ObjectRef, spec: BertDeploymentSpec, model: ModelVersion
) -> dict[str, Any] | None:
    scaling = spec.serving.autoscaling
    if scaling is None:
        return None
    name = server_name(owner.name, model.name)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_metadata(owner, name, object_labels(owner, "model-server", model.name)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [_cpu_target(scaling.target_cpu_percent)],
        },
    }


def _cpu_target(percent: int) -> dict[str, Any]:
    target = {"type": "Utilization", "averageUtilization": percent}
    return {"type": "Resource", "resource": {"name": "cpu", "target": target}}


def disruption_budget(
    owner: ObjectRef, name: str, labels: dict[str, str], replicas: int
) -> dict[str, Any] | None:
    """At most one pod down at a time during node drains; none for a single replica
    (a budget a lone pod can never meet would block drains for good)."""
    if replicas < 2:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_metadata(owner, name, labels),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}},
    }
