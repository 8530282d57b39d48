"""Pure builders of the gateway's Kubernetes objects for a BertDeployment: the routes
ConfigMap the gateway watches, and the gateway Deployment + Service in front of the model
servers. Every object carries an owner reference to the BertDeployment.

The gateway is never restarted for a route change: the ConfigMap volume is updated in
place and the gateway re-reads it. Names, labels, ports and the pod template it shares
with the model servers come from :mod:`bertops.operator.deployment.server_manifests`.

No I/O: called by :func:`bertops.operator.deployment.serving_objects.children`, which lists every
serving object in the order the BertDeployment reconciler applies them.
"""

from __future__ import annotations

import json
from typing import Any

from bertops.api.deployment import BertDeploymentSpec, FeedbackAccess, Serving
from bertops.api.limits import GATEWAY_CONCURRENCY, request_body_limit
from bertops.api.routes import Routes
from bertops.operator.deployment.server_manifests import (
    FEEDBACK,
    GATEWAY_PORT,
    ROUTES_FILE,
    ServingConfig,
    cluster_service,
    deployment_subpath,
    gateway_name,
    http_probe,
    keeps_feedback,
    object_labels,
    object_metadata,
    pod_spec,
    routes_name,
)
from bertops.operator.objects import ObjectRef
from bertops.operator.runtime.manifests import (
    container_security_context,
    folder_init_container,
    store_env_from,
)

ROUTES_MOUNT = "/etc/bertops/routes"
FEEDBACK_MOUNT = "/var/bertops/feedback"
CREDENTIALS_MOUNT = "/etc/bertops/feedback-credentials"
# The gateway's /metrics listen here, apart from the public port: they name the canary.
METRICS_PORT = 9091
GATEWAY_COMMAND = ("bertops", "server", "gateway", "--routes", f"{ROUTES_MOUNT}/{ROUTES_FILE}")


def feedback_access_flags(access: FeedbackAccess, credentials: str | None) -> list[str]:
    """The gateway's flags for who may send feedback (both runtimes): the credentials
    folder (a mounted Secret, or the local runtime's copy of it), anonymous, budgets."""
    flags = [
        *("--feedback-labels-per-minute", str(access.labels_per_minute)),
        *("--feedback-bytes-per-hour", str(access.bytes_per_hour)),
    ]
    if credentials is not None:
        flags += ["--feedback-credentials", credentials]
    if access.anonymous:
        flags.append("--feedback-anonymous")
    return flags


def routes_configmap(owner: ObjectRef, table: Routes) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_metadata(
            owner, routes_name(owner.name), object_labels(owner, "gateway")
        ),
        "data": {ROUTES_FILE: json.dumps(table.to_wire(), indent=2, sort_keys=True)},
    }


def gateway_deployment(
    owner: ObjectRef, config: ServingConfig, spec: BertDeploymentSpec | None = None
) -> dict[str, Any]:
    labels = object_labels(owner, "gateway")
    serving = spec.serving if spec is not None else Serving()
    body_limit = request_body_limit(serving.max_texts_per_request, serving.max_chars)
    container: dict[str, Any] = {
        "name": "gateway",
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        # No --admin-token: on Kubernetes routes change through the mounted ConfigMap.
        # Never buffer more than the servers take, nor more bodies at once than fit.
        "command": [
            *GATEWAY_COMMAND,
            *("--port", str(GATEWAY_PORT)),
            *("--max-body-bytes", str(body_limit)),
            *("--limit-concurrency", str(GATEWAY_CONCURRENCY)),
            *("--metrics-port", str(METRICS_PORT)),
            *feedback_access_flags(
                serving.feedback,
                CREDENTIALS_MOUNT if serving.feedback.credentials_secret else None,
            ),
        ],
        "ports": [
            {"name": "http", "containerPort": GATEWAY_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        "readinessProbe": http_probe("/readyz", "http", 5, 3),
        "livenessProbe": http_probe("/healthz", "http", 10, 3),
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "routes", "mountPath": ROUTES_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    volumes: list[dict[str, Any]] = [
        {"name": "routes", "configMap": {"name": routes_name(owner.name)}},
        {"name": "tmp", "emptyDir": {}},
    ]
    _mount_credentials(container, volumes, serving.feedback.credentials_secret)
    init = _mount_feedback_log(container, volumes, owner, config) if keeps_feedback(spec) else []
    template_meta = {
        "labels": labels,
        # For a cluster's Prometheus; the rollout analysis reads these series.
        "annotations": {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(METRICS_PORT),
            "prometheus.io/path": "/metrics",
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_metadata(owner, gateway_name(owner.name), labels),
        "spec": {
            "replicas": config.gateway_replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": template_meta, "spec": pod_spec([container], volumes, init)},
        },
    }


def _mount_credentials(
    container: dict[str, Any], volumes: list[dict[str, Any]], secret: str | None
) -> None:
    """The feedback clients' Secret, when the spec names one. The kubelet reads it (the
    operator never does) and updates the files in place on an edit; the gateway re-reads
    them. 0440 + the pod's fsGroup: readable by the gateway's user only. Optional: a
    missing Secret refuses feedback (401), it never stops serving."""
    if not secret:
        return
    container["volumeMounts"].append(
        {"name": "feedback-credentials", "mountPath": CREDENTIALS_MOUNT, "readOnly": True}
    )
    volumes.append(
        {
            "name": "feedback-credentials",
            "secret": {"secretName": secret, "defaultMode": 0o440, "optional": True},
        }
    )


def _mount_feedback_log(
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    owner: ObjectRef,
    config: ServingConfig,
) -> list[dict[str, Any]]:
    """``--feedback-log``: one file per replica ($(POD_NAME), expanded by the kubelet: no
    two writers), only this deployment's feedback folder of the artifact PVC mounted; the
    init container that makes the folder as the pod's user. With the store in an object
    store: the log's URI there (spooled in /tmp and shipped), the store's env, no volume."""
    container["env"] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    if config.remote_root is not None:
        folder = config.log_uri(owner.namespace, owner.name, FEEDBACK)
        container["command"] += ["--feedback-log", f"{folder}/$(POD_NAME).jsonl"]
        container["envFrom"] = store_env_from(config.store_env)
        return []
    container["command"] += ["--feedback-log", f"{FEEDBACK_MOUNT}/$(POD_NAME).jsonl"]
    subpath = deployment_subpath(owner.name, FEEDBACK)
    container["volumeMounts"].append(
        {"name": "feedback", "mountPath": FEEDBACK_MOUNT, "subPath": subpath}
    )
    volumes.append(
        {"name": "feedback", "persistentVolumeClaim": {"claimName": config.artifact_pvc}}
    )
    return [folder_init_container("feedback", subpath, config.image, config.image_pull_policy)]


def gateway_service(owner: ObjectRef) -> dict[str, Any]:
    service = cluster_service(
        owner, gateway_name(owner.name), object_labels(owner, "gateway"), GATEWAY_PORT
    )
    # Each replica takes feedback only for the answers it gave: a client's connections
    # stay on one replica (kube-proxy, per client address), or its /feedback could land on
    # the other and get 404. Behind an ingress the address is the ingress pod's: still one
    # replica per path through it.
    service["spec"]["sessionAffinity"] = "ClientIP"
    # For Prometheus and `bertops rollout status` through the API server's Service proxy;
    # the tenant's NetworkPolicy opens it only to the operator and monitoring namespaces.
    service["spec"]["ports"].append(
        {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"}
    )
    return service
