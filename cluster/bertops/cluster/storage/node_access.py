"""The embedded cluster's S3 server as the node's pods reach it: a relay listening on the
node's address inside its network namespace at the server's port (the node's own
forwarder, :mod:`bertops.cluster.node.forwarder`, which connects each client to the
server's loopback port), and a Service ``bertops-s3`` in ``bertops-system`` whose
EndpointSlice names that address, so a pod's endpoint is
``http://bertops-s3.bertops-system.svc:<port>`` (kube-proxy takes it to the relay). The
S3 server itself still listens on loopback only.

Called by ``bertops cluster storage up`` when the cluster has a node, and by the node
e2e tests; :func:`pod_client_env` is the environment to hand to a namespace's pods
(:func:`bertops.cluster.storage.cluster_objects.hand_over`).
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from typing import Any

from bertops.cluster.apply import server_side_apply
from bertops.cluster.node import configs, netns
from bertops.cluster.processes import alive, spawn, terminate

SERVICE = "bertops-s3"
SERVICE_NAMESPACE = "bertops-system"
FIELD_MANAGER = "bertops-storage"
RELAY = Path(sys.executable).name  # the relay is a Python process (the forwarder)


def service_manifests(port: int) -> list[dict[str, Any]]:
    """The selector-less Service and its EndpointSlice at the node's address. Pure."""
    labels = {"app.kubernetes.io/part-of": "bertops"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SERVICE_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": SERVICE_NAMESPACE, "labels": labels},
            "spec": {"ports": [{"name": "s3", "port": port, "protocol": "TCP"}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": SERVICE,
                "namespace": SERVICE_NAMESPACE,
                "labels": {**labels, "kubernetes.io/service-name": SERVICE},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [configs.NODE_IP]}],
            "ports": [{"name": "s3", "port": port, "protocol": "TCP"}],
        },
    ]


def pod_client_env(client_env: dict[str, str], port: int) -> dict[str, str]:
    """The S3 client environment of a pod: the loopback endpoint replaced by the Service."""
    return {
        **client_env,
        "AWS_ENDPOINT_URL_S3": f"http://{SERVICE}.{SERVICE_NAMESPACE}.svc:{port}",
    }


def relay_argv(node_name: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bertops.cluster.node.forwarder",
        f"--netns={netns.netns_name(node_name)}",
        f"--listen={configs.NODE_IP}:{port}",
        f"--target-port={port}",
    ]


def _listening(namespace: str, port: int) -> bool:
    """Whether something accepts connections at the node's address and ``port``."""

    def probe() -> bool:
        with socket.socket() as sock:
            sock.settimeout(1.0)
            return sock.connect_ex((configs.NODE_IP, port)) == 0

    return netns.call_inside(namespace, probe, timeout=5)


def expose(
    kubeconfig: Path, node_name: str, port: int, state_dir: Path, timeout: float = 10.0
) -> int:
    """Start the relay (unless the one recorded in ``state_dir`` runs) and apply the
    Service; the relay's pid."""
    pid_file = state_dir / "relay.pid"
    if pid_file.exists() and alive(int(pid_file.read_text()), RELAY):
        pid = int(pid_file.read_text())
    else:
        pid = spawn(relay_argv(node_name, port), state_dir / "relay.log")
        pid_file.write_text(str(pid))
        deadline = time.monotonic() + timeout
        while not _listening(netns.netns_name(node_name), port):
            if not alive(pid, RELAY) or time.monotonic() > deadline:
                log = (state_dir / "relay.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the S3 relay into the node did not start:\n{log}")
            time.sleep(0.1)
    server_side_apply(kubeconfig, service_manifests(port), FIELD_MANAGER)
    return pid


def withdraw(state_dir: Path) -> None:
    """Stop the relay, if one runs (the Service goes with the cluster)."""
    pid_file = state_dir / "relay.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        if alive(pid, RELAY):
            terminate(pid, RELAY, 10.0)
        pid_file.unlink(missing_ok=True)
