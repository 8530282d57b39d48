"""Starting a cluster's node: the cached node binaries (built when missing), the node's
processes, and the locally built images imported into its containerd.

Called by :meth:`bertops.cluster.controlplane.cluster.Cluster.up` with ``node=True``
(``bertops cluster up --node`` and the e2e fixture).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bertops.cluster.node.node import Node, NodeState

if TYPE_CHECKING:
    from bertops.cluster.controlplane.cluster import Cluster


def start_node(cluster: Cluster) -> NodeState:
    """Start (or reuse) the node of a running cluster."""
    from bertops.cluster.images.load import import_images
    from bertops.cluster.node.build import ensure_node_binaries

    binaries = ensure_node_binaries(cluster.progress)
    api_port = int(cluster.state().server.rsplit(":", 1)[1])

    def load_images(socket: Path) -> None:
        import_images(str(socket), "k8s.io", say=cluster.progress)

    node = Node(cluster.directory, cluster.name, cluster.progress)
    return node.up(binaries, api_port, cluster.node_tokens(), load_images)
