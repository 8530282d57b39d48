"""The embedded Kubernetes control plane: a real kube-apiserver and etcd on loopback.

``build`` compiles both from their Go modules at pinned versions into a cache outside the
repository (or downloads the checksum-pinned releases); ``cluster`` starts, inspects and
stops a named cluster with its own private data folder, certificates (``certs``; etcd
speaks mutual TLS with kube-apiserver only), token and kubeconfig, written by ``files``,
its processes run by ``processes``. Used by ``bertops cluster ...``, the demo and the
integration-test fixture.
"""

from bertops.cluster.controlplane.build import (
    ETCD_VERSION,
    KUBERNETES_VERSION,
    Binaries,
    ensure_binaries,
)
from bertops.cluster.controlplane.cluster import Cluster, ClusterError

__all__ = [
    "ETCD_VERSION",
    "KUBERNETES_VERSION",
    "Binaries",
    "Cluster",
    "ClusterError",
    "ensure_binaries",
]
