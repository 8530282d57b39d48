"""Server-side apply of plain manifests to an embedded cluster, one loop for every
installer: the bertops CRDs (:mod:`bertops.cluster.controlplane.crds`), Argo Workflows
(:mod:`bertops.cluster.argo_workflows.run`) and Argo CD (:mod:`bertops.cluster.argocd.run`).

Server-side, not client-side: the Argo CRDs are too big for the last-applied annotation.
Conflicts are forced because each installer owns what it applies.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def server_side_apply(
    kubeconfig: Path | str | None, docs: list[dict[str, Any]], field_manager: str
) -> list[str]:
    """Apply each document in order as ``field_manager``; the names applied."""
    from kubernetes import dynamic

    api_client = _client(kubeconfig)
    try:
        client = dynamic.DynamicClient(api_client)
        for doc in docs:
            resource = client.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            resource.server_side_apply(
                body=doc,
                namespace=doc["metadata"].get("namespace"),
                field_manager=field_manager,
                force_conflicts=True,
            )
    finally:
        api_client.close()
    return [doc["metadata"]["name"] for doc in docs]


def apply_when_served(
    kubeconfig: Path | str | None, docs: list[dict[str, Any]], field_manager: str, timeout: float
) -> None:
    """:func:`server_side_apply`, tried again until ``timeout`` while a kind among the
    documents is not served yet (its CRD was applied a moment ago)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            server_side_apply(kubeconfig, docs, field_manager)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def wait_served(kubeconfig: Path | str | None, api_version: str, kind: str, timeout: float) -> None:
    """Return once the API server serves ``kind`` (a CRD applied is not served at once)."""
    from kubernetes import dynamic

    deadline = time.monotonic() + timeout
    while True:
        api_client = _client(kubeconfig)
        try:
            dynamic.DynamicClient(api_client).resources.get(api_version=api_version, kind=kind)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        finally:
            api_client.close()


def _client(kubeconfig: Path | str | None) -> Any:
    from kubernetes import config

    # None: the default kubeconfig (``bertops crds install`` with $KUBECONFIG).
    return config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None)
