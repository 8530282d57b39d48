"""Every Kubernetes object that serves a BertDeployment, in the order the reconciler
applies them: each model version's server Deployment and Service, the gateway's routes
ConfigMap, Deployment and Service, then the optional autoscalers and disruption budgets.

Pure: assembles the builders of :mod:`bertops.operator.deployment.server_manifests` (servers, shared
names and pod template) and :mod:`bertops.operator.deployment.gateway_manifests` (the
gateway), which depend on each other only in that direction. Called by
:class:`bertops.operator.deployment.kubernetes.KubernetesServing`.
"""

from __future__ import annotations

from typing import Any

from bertops.api.deployment import BertDeploymentSpec
from bertops.api.routes import Routes
from bertops.operator.deployment import gateway_manifests
from bertops.operator.deployment.server_manifests import (
    ModelVersion,
    ServingConfig,
    autoscaler,
    disruption_budget,
    gateway_name,
    object_labels,
    server_deployment,
    server_name,
    server_service,
)
from bertops.operator.objects import ObjectRef


def children(
    owner: ObjectRef,
    spec: BertDeploymentSpec,
    table: Routes,
    models: list[ModelVersion],
    config: ServingConfig,
) -> list[dict[str, Any]]:
    """Every object serving needs for these model versions, in the order to apply them:
    servers before the routes that point at them, then the gateway, then the optional
    autoscalers and disruption budgets."""
    found: list[dict[str, Any]] = []
    scaling = spec.serving.autoscaling
    least = scaling.min_replicas if scaling else spec.serving.replicas
    gateway = object_labels(owner, "gateway")
    optional = [
        disruption_budget(owner, gateway_name(owner.name), gateway, config.gateway_replicas)
    ]
    for model in models:
        name, labels = (
            server_name(owner.name, model.name),
            object_labels(owner, "model-server", model.name),
        )
        found += [server_deployment(owner, spec, model, config), server_service(owner, model)]
        optional += [autoscaler(owner, spec, model), disruption_budget(owner, name, labels, least)]
    found.append(gateway_manifests.routes_configmap(owner, table))
    found += [
        gateway_manifests.gateway_deployment(owner, config, spec),
        gateway_manifests.gateway_service(owner),
    ]
    return found + [x for x in optional if x is not None]
