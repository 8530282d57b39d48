"""Kubernetes serving of a BertDeployment (kubernetes runtime): applies the pure builders
of :mod:`bertops.operator.deployment.server_manifests` through the kube layer (server-side apply,
owner references on every object), in the order that never drops a request:

1. start: the Deployment + Service of every model the target names;
2. wait ready: a server enters the routes ConfigMap only once its Deployment reports an
   available replica (until then the routes keep the stable in force);
3. shift: the routes ConfigMap is applied; the gateway re-reads its mounted copy;
4. drain: a server the routes no longer name keeps running for ``DRAIN_SECONDS`` (the
   kubelet's ConfigMap sync, the gateway's poll, and in-flight requests);
5. stop: then its Deployment, Service, HPA and PDB are deleted.

Called by :mod:`bertops.operator.deployment.reconciler`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from bertops.api.deployment import BertDeploymentSpec
from bertops.api.routes import Routes
from bertops.operator.config import OperatorConfig
from bertops.operator.deployment import server_manifests as manifests
from bertops.operator.deployment import serving_objects
from bertops.operator.deployment.gateway_manifests import METRICS_PORT
from bertops.operator.deployment.target import Served, Target
from bertops.operator.kube import Kube
from bertops.operator.objects import ObjectRef

log = logging.getLogger(__name__)
DRAIN_SECONDS = 120.0  # kubelet ConfigMap sync (up to ~60 s) + gateway poll + drain
SERVER_KINDS = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
)


class KubernetesServing:
    def __init__(self, kube: Kube, config: OperatorConfig) -> None:
        self.kube = kube
        self.config = config
        self.serving = manifests.ServingConfig.from_operator(config, image=config.serving_image)
        # (namespace, server object name) -> when the routes stopped naming it. In memory:
        # after an operator restart the drain simply starts again (later, never sooner).
        self._retired: dict[tuple[str, str], float] = {}
        self._guard = threading.Lock()

    def ensure(self, owner: ObjectRef, spec: BertDeploymentSpec, target: Target) -> Served:
        ready = {
            m.name
            for m in target.models
            if self._available(manifests.server_name(owner.name, m.name), owner.namespace)
        }
        current = self._routes_in_force(owner)
        canary = target.canary if target.canary and target.canary.name in ready else None
        table = manifests.routes(
            owner,
            target.stable,
            None if target.shadow else canary,
            target.weight if canary and not target.shadow else 0,
            shadow=canary if target.shadow else None,
            sticky=target.sticky,
            compare=target.compare and not target.shadow,
        )
        if target.stable.name not in ready and current is not None:
            # The new stable is not ready yet: the stable in force keeps serving.
            table = table.model_copy(update={"stable": current.stable})
        models = target.models
        for manifest in serving_objects.children(owner, spec, table, models, self.serving):
            self.kube.apply(manifest)
        keep = {m.name for m in models} | {table.stable.name}
        drained = self._drain(owner, {manifests.server_name(owner.name, n) for n in keep})
        gateway = self._available(manifests.gateway_name(owner.name), owner.namespace)
        # Serving means the gateway and the server it routes stable traffic to both answer
        # (a first rollout's gateway is up well before its model server has loaded).
        stable_up = table.stable.name in ready or self._available(
            manifests.server_name(owner.name, table.stable.name), owner.namespace
        )
        settled = gateway and drained and ready >= {m.name for m in models}
        serving_now = gateway and stable_up
        endpoint = _endpoint(owner) if serving_now else None
        return Served(
            endpoint,
            table if serving_now else None,
            settled,
            self._gateway_metrics(owner),
            metrics_endpoint=metrics_endpoint(owner) if serving_now else None,
        )

    def observe(self, owner: ObjectRef) -> Served:
        table = self._routes_in_force(owner)
        served = table is not None
        return Served(
            _endpoint(owner) if served else None,
            table,
            True,
            self._gateway_metrics(owner),
            metrics_endpoint=metrics_endpoint(owner) if served else None,
        )

    def _gateway_metrics(self, owner: ObjectRef) -> tuple[str, ...]:
        """Each ready gateway pod's /metrics, for the analysis to sum. Through the Service
        every scrape would land on one replica or another, each with its own counters: the
        sums jumped back and forth and a canary step never saw its traffic add up."""
        labels = manifests.object_labels(owner, "gateway")
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        pods = self.kube.list_resources("v1", "Pod", owner.namespace, selector)
        return metrics_urls(pods, metrics_endpoint(owner) + "/metrics")

    def _available(self, name: str, namespace: str) -> bool:
        found = self.kube.read("apps/v1", "Deployment", namespace, name)
        return bool(((found or {}).get("status") or {}).get("availableReplicas"))

    def _routes_in_force(self, owner: ObjectRef) -> Routes | None:
        found = self.kube.read(
            "v1", "ConfigMap", owner.namespace, manifests.routes_name(owner.name)
        )
        data = ((found or {}).get("data") or {}).get(manifests.ROUTES_FILE)
        try:
            return Routes.model_validate(json.loads(data)) if data else None
        except ValueError:
            return None

    def _drain(self, owner: ObjectRef, keep: set[str]) -> bool:
        selector = (
            f"{manifests.DEPLOYMENT_LABEL}={owner.name},{manifests.COMPONENT_LABEL}=model-server"
        )
        found = self.kube.list_resources("apps/v1", "Deployment", owner.namespace, selector)
        settled = True
        now = time.monotonic()
        for item in found:
            name = item["metadata"]["name"]
            if name in keep:
                with self._guard:
                    self._retired.pop((owner.namespace, name), None)
                continue
            settled = False
            with self._guard:
                since = self._retired.setdefault((owner.namespace, name), now)
            if now - since >= DRAIN_SECONDS:
                for api_version, kind in SERVER_KINDS:
                    self.kube.delete(api_version, kind, owner.namespace, name)
                log.info("deleted retired server %s/%s", owner.namespace, name)
        return settled

    def cleanup(self, namespace: str, name: str, uid: str) -> list[str]:
        return []  # owner references: the garbage collector removes every child


def metrics_urls(pods: list[dict[str, Any]], fallback: str) -> tuple[str, ...]:
    """/metrics of each ready pod with an address, in a stable order; ``fallback`` (the
    Service) while there is none."""
    urls = sorted(
        f"http://{ip}:{METRICS_PORT}/metrics"
        for pod in pods
        if (ip := (pod.get("status") or {}).get("podIP")) and _pod_ready(pod)
    )
    return tuple(urls) or (fallback,)


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _endpoint(owner: ObjectRef, port: int = manifests.GATEWAY_PORT) -> str:
    host = f"{manifests.gateway_name(owner.name)}.{owner.namespace}.svc"
    return f"http://{host}:{port}"


def metrics_endpoint(owner: ObjectRef) -> str:
    """The gateway Service's metrics port (Prometheus, `bertops rollout status`)."""
    return _endpoint(owner, METRICS_PORT)
