"""Starting a cluster's node: the cached node binaries (built when missing), the node's
processes, and the locally built images imported into its containerd.

Called by :meth:`bertops.cluster.controlplane.cluster.Cluster.up` with ``node=True``
(``bertops cluster up --node`` and the e2e fixture).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bertops.cluster.node.node import Node, NodeState


def start_node(
    directory: Path,
    name: str,
    api_port: int,
    tokens: dict[str, str],
    progress: Callable[[str], None],
) -> NodeState:
    """Start (or reuse) the node of the running cluster in ``directory`` (its API server
    on ``api_port``, the node components' ``tokens``). Takes plain values, not the
    Cluster: the node package never refers back to the control plane's."""
    from bertops.cluster.images.load import import_images
    from bertops.cluster.node.build import ensure_node_binaries

    binaries = ensure_node_binaries(progress)

    def load_images(socket: Path) -> None:
        import_images(str(socket), "k8s.io", say=progress)

    node = Node(directory, name, progress)
    return node.up(binaries, api_port, tokens, load_images)
