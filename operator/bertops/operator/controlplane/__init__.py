"""The embedded Kubernetes control plane: a real kube-apiserver and etcd on loopback.

``build`` compiles both from their Go modules at pinned versions into a cache outside the
repository; ``cluster`` starts, inspects and stops a named cluster with its own data
folder, certificates, token and kubeconfig. Used by ``bertops cluster ...``, the demo and
the integration-test fixture.
"""

from bertops.operator.controlplane.build import (
    ETCD_VERSION,
    KUBERNETES_VERSION,
    Binaries,
    ensure_binaries,
)
from bertops.operator.controlplane.cluster import Cluster, ClusterError

__all__ = [
    "ETCD_VERSION",
    "KUBERNETES_VERSION",
    "Binaries",
    "Cluster",
    "ClusterError",
    "ensure_binaries",
]
