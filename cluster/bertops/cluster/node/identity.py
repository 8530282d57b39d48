"""Who each part of a node is to the API server: one static token per component, each
mapped to the user name kubeadm's clusters give it, so that the API server's Node
authorizer and the RBAC roles it bootstraps (``system:node``, ``system:kube-scheduler``,
``system:kube-controller-manager``, ``system:node-proxier``) apply exactly as on any
cluster. The admin token is never handed to a node component.

The two grants Kubernetes does not bootstrap are here as objects: CoreDNS's read access
(kubeadm's ``system:coredns``) and the API server's access to the kubelet's API
(kubeadm's ``kube-apiserver-kubelet-client`` binding to ``system:kubelet-api-admin``),
which the kubelet checks with a SubjectAccessReview since its authorization is Webhook.

Pure but for :func:`apply_bootstrap_rbac` (which creates those grants): called by
:class:`bertops.cluster.controlplane.cluster.Cluster` (the token file) and
:class:`bertops.cluster.node.node.Node` (kubeconfigs and the bootstrap RBAC);
unit-tested in tests/cluster/test_node_configs.py, applied in tests/node.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMPONENTS = ("kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy", "coredns")
# The client certificate's common name the API server presents to the kubelet.
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
COREDNS_USER = "system:coredns"


def user_of(component: str, node_name: str) -> tuple[str, list[str]]:
    """(user, groups) of a component: the Node authorizer needs ``system:node:<name>``
    in ``system:nodes``; the rest are the users the bootstrap bindings name."""
    if component == "kubelet":
        return f"system:node:{node_name}", ["system:nodes"]
    if component == "coredns":
        return COREDNS_USER, []
    if component == "kube-proxy":
        return "system:kube-proxy", []
    return f"system:{component}", []


def new_tokens() -> dict[str, str]:
    return {component: secrets.token_hex(24) for component in COMPONENTS}


def token_lines(tokens: dict[str, str], node_name: str) -> str:
    """kube-apiserver's --token-auth-file lines (token,user,uid,"groups") for them."""
    lines = []
    for component in COMPONENTS:
        user, groups = user_of(component, node_name)
        group_field = f',"{",".join(groups)}"' if groups else ""
        lines.append(f"{tokens[component]},{user},{component}{group_field}\n")
    return "".join(lines)


def bootstrap_rbac() -> list[dict[str, Any]]:
    """The ClusterRoles and bindings a node needs that the API server does not create."""
    coredns_rules = [
        {
            "apiGroups": [""],
            "resources": ["endpoints", "services", "pods", "namespaces"],
            "verbs": ["list", "watch"],
        },
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["list", "watch"],
        },
    ]
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": COREDNS_USER},
            "rules": coredns_rules,
        },
        _binding(COREDNS_USER, COREDNS_USER, COREDNS_USER),
        _binding(KUBELET_CLIENT_USER, "system:kubelet-api-admin", KUBELET_CLIENT_USER),
    ]


def _binding(name: str, role: str, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


def apply_bootstrap_rbac(admin_kubeconfig: Path) -> None:
    """Create the node's grants the API server does not bootstrap (an existing one is
    kept): CoreDNS's reads and the API server's access to the kubelet."""
    from kubernetes import client, config

    with config.new_client_from_config(str(admin_kubeconfig)) as api_client:
        rbac = client.RbacAuthorizationV1Api(api_client)
        for obj in bootstrap_rbac():
            create: Callable[[Any], Any] = (
                rbac.create_cluster_role
                if obj["kind"] == "ClusterRole"
                else rbac.create_cluster_role_binding
            )
            try:
                create(obj)
            except client.ApiException as error:
                if error.status != 409:
                    raise
