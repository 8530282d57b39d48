"""Installs the bertops CRDs into a cluster with server-side apply and waits until the
API server reports them Established. Called by ``Cluster.up`` and ``bertops crds install``.
"""

from __future__ import annotations

import time

from kubernetes import client, config

from bertops.api.crdgen import load_crds
from bertops.cluster.apply import server_side_apply

FIELD_MANAGER = "bertops"


def install(kubeconfig: str | None = None, timeout: float = 30.0) -> list[str]:
    names = server_side_apply(kubeconfig, load_crds(), FIELD_MANAGER)
    api_client = config.new_client_from_config(config_file=kubeconfig)
    try:
        extensions = client.ApiextensionsV1Api(api_client)
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                status = extensions.read_custom_resource_definition(name).status
                conditions = {c.type: c.status for c in ((status and status.conditions) or [])}
                if conditions.get("Established") == "True":
                    pending.discard(name)
            if pending:
                time.sleep(0.2)
        if pending:
            raise TimeoutError(f"CRDs not established after {timeout:.0f}s: {sorted(pending)}")
        return names
    finally:
        api_client.close()
