"""Pure builders of the Kubernetes children of a step (dask-kubernetes style): the
ConfigMap holding the step spec, the Job that runs it (an Indexed Job for N ranks) and,
for multi-rank training, the headless Service that gives rank 0 a stable DNS name and the
NetworkPolicy that opens the DDP port only between that step's own pods.

No I/O: :class:`bertops.operator.runtime.kubernetes.KubernetesRuntime` applies them.
"""

from __future__ import annotations

from typing import Any

from bertops.operator.config import OperatorConfig
from bertops.operator.runtime.base import StepRequest

SPEC_MOUNT = "/etc/bertops/step"
MASTER_PORT = 29500
STEP_LABEL = "bertops.io/step"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def labels(request: StepRequest) -> dict[str, str]:
    owner = request.owner or {}
    found = {
        "app.kubernetes.io/part-of": "bertops",
        "app.kubernetes.io/component": f"step-{request.kind}",
        STEP_LABEL: request.name,
    }
    if owner.get("kind") and owner.get("name"):
        found[f"bertops.io/{owner['kind'].lower()}"] = owner["name"]
    return found


def _metadata(request: StepRequest, name: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": request.namespace, "labels": labels(request)}
    if request.owner:
        meta["ownerReferences"] = [request.owner]
    return meta


def store_env_from(name: str) -> list[dict[str, Any]]:
    """A pod's ``envFrom`` for an artifact store in an object store: the endpoint and
    region (ConfigMap) and the credentials (Secret) named ``name`` in its own namespace,
    each optional (workload identity, or a public endpoint, needs neither)."""
    return [
        {"configMapRef": {"name": name, "optional": True}},
        {"secretRef": {"name": name, "optional": True}},
    ]


def tenant_mount(artifact_mount: str, namespace: str) -> str:
    """Where a pod of ``namespace`` mounts its namespace's artifact PVC: that PVC's
    volume is the namespace's own folder of the store (gitops/tenant), so its paths are
    the ones the operator sees below the whole store (``<mount>/<namespace>/...``) and
    nothing of another namespace is there to read or write."""
    return f"{artifact_mount.rstrip('/')}/{namespace}"


def spec_configmap(request: StepRequest, config: OperatorConfig) -> dict[str, Any]:
    spec = request.spec.model_copy(update={"result_uri": _result_uri(request, config)})
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(request, request.name),
        "data": {"spec.json": spec.model_dump_json(by_alias=True, exclude_none=True, indent=2)},
    }


def _result_uri(request: StepRequest, config: OperatorConfig) -> str:
    """A copy of the step's result beside its artifacts (the operator reads the
    termination message): on the namespace's volume, or in the object store."""
    if config.remote_store:
        return config.artifact_uri(request.namespace, "steps", request.name, "result.json")
    return (
        f"{tenant_mount(config.artifact_mount, request.namespace)}/steps/{request.name}/result.json"
    )


def headless_service(request: StepRequest) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(request, request.name),
        "spec": {
            "clusterIP": "None",
            "selector": {STEP_LABEL: request.name},
            "ports": [{"name": "dist", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
            "publishNotReadyAddresses": True,  # ranks find each other before Ready
        },
    }


def ddp_network_policy(request: StepRequest) -> dict[str, Any]:
    """For N ranks: the rendezvous/DDP port open only between this step's own pods, in
    and out. The tenant's policy (gitops/tenant) denies all other ingress to step pods,
    so one training's ranks never reach another training's port in the same namespace.
    Owned like the Job, so it goes with it."""
    own_pods = {"podSelector": {"matchLabels": labels(request)}}
    ports = [{"protocol": "TCP", "port": MASTER_PORT}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(request, request.name),
        "spec": {
            **own_pods,
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [own_pods], "ports": ports}],
            "egress": [{"to": [own_pods], "ports": ports}],
        },
    }


def _env(request: StepRequest) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "BERTOPS_TERMINATION_LOG", "value": "/dev/termination-log"},
    ]
    if request.replicas > 1:
        # The torch.distributed env contract; RANK is the Indexed Job's completion index.
        env += [
            {"name": "MASTER_ADDR", "value": f"{request.name}-0.{request.name}"},
            {"name": "MASTER_PORT", "value": str(MASTER_PORT)},
            {"name": "WORLD_SIZE", "value": str(request.replicas)},
            {
                "name": "RANK",
                "valueFrom": {
                    "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}
                },
            },
            {"name": "LOCAL_RANK", "value": "0"},
        ]
    return env


def _resources(request: StepRequest) -> dict[str, Any]:
    requests: dict[str, Any] = {"cpu": request.cpu, "memory": request.memory}
    limits: dict[str, Any] = {"memory": request.memory}
    if request.gpu:
        limits["nvidia.com/gpu"] = request.gpu
        requests["nvidia.com/gpu"] = request.gpu
    return {"requests": requests, "limits": limits}


POD_FAILURE_POLICY: dict[str, Any] = {
    "rules": [
        # Exit code 2 means bad input: fail the Job at once (never retried).
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": "step", "operator": "In", "values": [2]},
        },
        # An evicted or preempted pod did not fail the step: run it again in place
        # without spending an attempt.
        {
            "action": "Ignore",
            "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
        },
    ]
}


def container_security_context() -> dict[str, Any]:
    """The "restricted" Pod Security Standard for a container: no root, no privilege
    escalation, no capabilities, a read-only root filesystem. Also used by the serving
    pods (:mod:`bertops.operator.deployment.server_manifests`,
    :mod:`bertops.operator.deployment.gateway_manifests`)."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security_context() -> dict[str, Any]:
    """The pod side of the restricted standard: a fixed non-root user and group, and
    the runtime's default seccomp profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def folder_init_container(
    volume: str, subpath: str, image: str, pull_policy: str
) -> dict[str, Any]:
    """An init container that makes ``subpath`` of a volume, as the pod's user, before
    the main container mounts it. Without it the kubelet makes a missing subPath folder
    itself, owned by root, and the non-root server or gateway cannot write its log there
    (the operator's own mount of the store is read-only, so it cannot make it either)."""
    return {
        "name": "make-folder",
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": ["mkdir", "-p", f"/store/{subpath}"],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": volume, "mountPath": "/store"}],
    }


def _storage(
    request: StepRequest, config: OperatorConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """A step's mounts, volumes and ``envFrom``: the spec, /tmp and either the namespace's
    artifact PVC or, for an object store, that store's endpoint and key."""
    mounts: list[dict[str, Any]] = [
        {"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "spec", "configMap": {"name": request.name}},
        {"name": "tmp", "emptyDir": {"sizeLimit": config.step_tmp_size}},
    ]
    env_from = [{"secretRef": {"name": name}} for name in request.env_secrets]
    if config.remote_store:
        return mounts, volumes, store_env_from(config.artifact_store_env) + env_from
    # The namespace's own PVC, whose volume is its folder of the store: a step sees its
    # namespace's data and models at the paths the operator sees, and nothing of another
    # namespace.
    mounts.insert(
        1,
        {"name": "artifacts", "mountPath": tenant_mount(config.artifact_mount, request.namespace)},
    )
    volumes.insert(
        1, {"name": "artifacts", "persistentVolumeClaim": {"claimName": config.artifact_pvc}}
    )
    return mounts, volumes, env_from


def job(request: StepRequest, config: OperatorConfig) -> dict[str, Any]:
    """The Job running the step: non-root, read-only root filesystem, spec from the
    ConfigMap, artifacts on the shared volume (or in the object store), result via the
    termination message."""
    distributed = request.replicas > 1
    mounts, volumes, env_from = _storage(request, config)
    container: dict[str, Any] = {
        "name": "step",
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["bertops", "trainer", request.kind, "--spec", f"{SPEC_MOUNT}/spec.json"],
        "env": _env(request),
        "resources": _resources(request),
        "securityContext": container_security_context(),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    if env_from:
        container["envFrom"] = env_from
    if distributed:
        container["ports"] = [{"name": "dist", "containerPort": MASTER_PORT}]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": config.service_account,
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if distributed:
        pod_spec["subdomain"] = request.name  # pod DNS: <job>-<index>.<service>
    spec: dict[str, Any] = {
        # One attempt per Job: the operator retries exit codes 1 and 3 itself, as a new
        # step with backoff (the same policy as the local runtime, and one it can count).
        "backoffLimit": 0,
        "activeDeadlineSeconds": config.step_deadline_seconds,
        "ttlSecondsAfterFinished": 86400,
        "template": {"metadata": {"labels": labels(request)}, "spec": pod_spec},
        "podFailurePolicy": POD_FAILURE_POLICY,
    }
    if distributed:
        spec.update(
            completionMode="Indexed", completions=request.replicas, parallelism=request.replicas
        )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(request, request.name),
        "spec": spec,
    }


def children(request: StepRequest, config: OperatorConfig) -> list[dict[str, Any]]:
    """Every object a step needs, in the order to create them."""
    found = [spec_configmap(request, config)]
    if request.replicas > 1:
        # The policy before the Job: no rank ever runs with its port unguarded.
        found += [ddp_network_policy(request), headless_service(request)]
    found.append(job(request, config))
    return found
