"""The command lines of an embedded cluster's etcd and kube-apiserver: etcd serving TLS
only to clients holding a certificate from its own CA, kube-apiserver on loopback with
RBAC and static tokens. With a node, kube-apiserver also authorizes kubelets by the Node
authorizer (and NodeRestriction admission), advertises the node relay's address as the
``kubernetes`` Service's endpoint, and reaches kubelets through the node's egress relay
(an HTTP CONNECT proxy on a unix socket, :mod:`bertops.cluster.node.forwarder`) with its
own client certificate. Pure; called by
:meth:`bertops.cluster.controlplane.cluster.Cluster.up` and unit-tested in
tests/cluster/test_private_files.py."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from bertops.cluster.node.configs import NODE_IP, SERVICE_SUBNET


class ApiserverState(Protocol):
    """What the API server's command line needs of a cluster's state
    (:class:`bertops.cluster.controlplane.cluster.ClusterState`)."""

    name: str
    etcd_url: str
    node: bool


EGRESS_SELECTOR_FILE = "egress-selector.yaml"  # in the cluster's folder, with a node
ETCD_CLIENT = "apiserver-etcd-client"  # as certs.ETCD_CLIENT, without importing cryptography


def etcd_argv(etcd: Path, directory: Path, client_url: str, peer_port: int) -> list[str]:
    """etcd serving TLS only, to clients holding a certificate from its own CA."""
    pki = directory / "pki" / "etcd"
    peer_url = f"https://127.0.0.1:{peer_port}"
    return [
        str(etcd),
        "--name=default",
        f"--data-dir={directory / 'etcd'}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--cert-file={pki / 'server.crt'}",
        f"--key-file={pki / 'server.key'}",
        "--client-cert-auth",
        f"--trusted-ca-file={pki / 'ca.crt'}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=default={peer_url}",
        f"--peer-cert-file={pki / 'peer.crt'}",
        f"--peer-key-file={pki / 'peer.key'}",
        "--peer-client-cert-auth",
        f"--peer-trusted-ca-file={pki / 'ca.crt'}",
        "--unsafe-no-fsync",  # a throwaway dev/test store: speed over durability
        "--log-level=warn",
    ]


def apiserver_argv(
    kube_apiserver: Path, directory: Path, state: ApiserverState, api_port: int
) -> list[str]:
    """kube-apiserver on loopback: the static admin token, RBAC, etcd over mutual TLS."""
    pki = directory / "pki"
    etcd_client = pki / "etcd" / ETCD_CLIENT
    return [
        str(kube_apiserver),
        f"--etcd-servers={state.etcd_url}",
        f"--etcd-cafile={pki / 'etcd' / 'ca.crt'}",
        f"--etcd-certfile={etcd_client}.crt",
        f"--etcd-keyfile={etcd_client}.key",
        f"--etcd-prefix=/registry-{state.name}",
        "--bind-address=127.0.0.1",
        f"--secure-port={api_port}",
        f"--cert-dir={pki}",
        f"--tls-cert-file={pki / 'server.crt'}",
        f"--tls-private-key-file={pki / 'server.key'}",
        f"--token-auth-file={directory / 'tokens.csv'}",
        *(_node_flags(directory) if state.node else _no_node_flags()),
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_SUBNET}",
        "--allow-privileged=true",
        "--v=1",
    ]


def _no_node_flags() -> list[str]:
    return [
        "--advertise-address=127.0.0.1",
        "--authorization-mode=RBAC",
        # Without a node no controller-manager creates service accounts, and no pod needs one.
        "--disable-admission-plugins=ServiceAccount",
    ]


def _node_flags(directory: Path) -> list[str]:
    pki = directory / "pki"
    return [
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        # Pods reach the API server at the `kubernetes` Service, whose endpoint is this
        # address: the node's relay listens on it inside the node's network namespace.
        f"--advertise-address={NODE_IP}",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP",
        f"--egress-selector-config-file={directory / EGRESS_SELECTOR_FILE}",
    ]
