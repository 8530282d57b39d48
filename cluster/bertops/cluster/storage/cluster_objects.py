"""The S3 server's credentials handed to the cluster: the Secret ``bertops-artifacts-s3``
(the access key pair) and the ConfigMap of the same name (endpoint and region), the names
the gitops ``artifacts-object-store`` component reads with ``envFrom``. Called by
``bertops cluster storage up``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertops.cluster.apply import server_side_apply

NAME = "bertops-artifacts-s3"
FIELD_MANAGER = "bertops-storage"
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def manifests(namespace: str, client_env: dict[str, str]) -> list[dict[str, Any]]:
    """The Namespace, Secret and ConfigMap. Pure."""
    meta = {
        "name": NAME,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/part-of": "bertops"},
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta,
            "type": "Opaque",
            "stringData": {key: client_env[key] for key in SECRET_KEYS},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {k: v for k, v in client_env.items() if k not in SECRET_KEYS},
        },
    ]


def hand_over(kubeconfig: Path, namespace: str, client_env: dict[str, str]) -> None:
    server_side_apply(kubeconfig, manifests(namespace, client_env), FIELD_MANAGER)
