"""The read/patch layer of ``bertops rollout``: read a BertDeployment, write the manual
action annotation (a merge patch of ``metadata.annotations`` only: never the spec, so
``metadata.generation`` stays and Argo CD sees nothing to sync), find whether the
operator applied it, and read the per-variant counts from the gateway's ``/metrics``
(through the API server's Service proxy when the gateway's in-cluster name does not
resolve here).

Reads go through :class:`bertops.operator.kube.Kube` (the operator's own layer, so both
parse the same objects); only the annotation patch is written here. Used by
:mod:`bertops.cli.rollout`; imports the kubernetes client, so that module loads this one
only when a command runs.
"""

from __future__ import annotations

import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from bertops.api import deployment as api
from bertops.api.kinds import GROUP, VERSION, kind_info
from bertops.operator.kube import Kube, context_namespace
from bertops.operator.rollout.actions import ANNOTATION
from bertops.operator.rollout.metrics import Observations, observations_for, parse_gateway

KIND = "BertDeployment"
METRICS_TIMEOUT = 2.0  # a gateway that does not answer quickly is shown as unreachable
METRICS_MAX_BYTES = 8 << 20
# What a failed call to the API server raises: its answer, or no answer (urllib3).
API_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)
# The operator's answers to an action it could not apply (state.py's apply_action).
REFUSALS = (api.REASON_INVALID_ACTION, api.REASON_ACTION_IGNORED)


class RolloutClientError(Exception):
    """The API server could not be reached or refused a request."""


@dataclass(frozen=True)
class Handled:
    """What became of a written action: applied, or refused with the operator's words."""

    value: str
    refusal: str | None = None


def new_value(action: str) -> str:
    """``<action>/<nonce>``: the time makes it readable, the random part unique."""
    return f"{action}/{int(time.time())}-{secrets.token_hex(3)}"


class RolloutClient:
    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    @classmethod
    def connect(cls, kubeconfig: str | None, namespace: str | None) -> RolloutClient:
        try:
            kube = Kube.from_kubeconfig(kubeconfig)
        except Exception as error:  # a missing or unreadable kubeconfig: one clear line
            raise RolloutClientError(f"cannot load a kubeconfig: {error}") from error
        return cls(kube, namespace or context_namespace(kubeconfig))

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return self.kube.get(KIND, self.namespace, name)
        except API_ERRORS as error:
            raise RolloutClientError(_describe(error)) from error

    def annotate(self, name: str, value: str) -> dict[str, Any]:
        """Merge-patch the action annotation onto the object; nothing else changes."""
        patch = {"metadata": {"annotations": {ANNOTATION: value}}}
        try:
            patched = self.kube.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                kind_info(KIND).plural,
                name,
                patch,
                _content_type="application/merge-patch+json",
            )
        except API_ERRORS as error:
            raise RolloutClientError(_describe(error)) from error
        return cast(dict[str, Any], patched)

    def handled(self, name: str, value: str) -> Handled | None:
        """The outcome once ``value`` is in status.handledActions; None until then."""
        body = self.get(name)
        if body is None:
            raise RolloutClientError(f"{KIND} {self.namespace}/{name} was deleted")
        done = (body.get("status") or {}).get("handledActions") or []
        if value not in done:
            return None
        events: list[dict[str, Any]]
        try:
            events = self.kube.events_for(self.namespace, name)
        except API_ERRORS:
            events = []  # the action was applied either way; the refusal text is a bonus
        refusal = next(
            (e["message"] for e in events if e["reason"] in REFUSALS and value in e["message"]),
            None,
        )
        return Handled(value, refusal)


def in_cluster_service(endpoint: str) -> tuple[str, str, int] | None:
    """(namespace, Service name, port) of an in-cluster Service URL such as the one the
    operator writes in status.endpoint (``http://<svc>.<ns>.svc:8000``); None otherwise."""
    parts = urlsplit(endpoint)
    labels = (parts.hostname or "").split(".")
    if len(labels) >= 3 and labels[2] == "svc" and labels[3:] in ([], ["cluster", "local"]):
        return labels[1], labels[0], parts.port or 80
    return None


def _resolvable(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        return False
    return True


def _metrics_text(endpoint: str, kube: Kube | None) -> str:
    """The gateway's /metrics: directly, or, when the endpoint is a Service name this
    machine cannot resolve (kubectl outside the cluster), through the API server's
    Service proxy, as ``kubectl get --raw`` would reach it."""
    service = in_cluster_service(endpoint)
    if kube is not None and service and not _resolvable(urlsplit(endpoint).hostname or ""):
        namespace, name, port = service
        # With _preload_content=False the client hands back the urllib3 response.
        response: Any = kube.core.connect_get_namespaced_service_proxy_with_path(
            f"{name}:{port}",
            namespace,
            "metrics",
            _preload_content=False,
            _request_timeout=METRICS_TIMEOUT,
        )
        content = response.read(METRICS_MAX_BYTES + 1)
        if len(content) > METRICS_MAX_BYTES:
            raise ValueError(f"{name}'s /metrics answered more than {METRICS_MAX_BYTES} bytes")
        return bytes(content).decode("utf-8", "replace")
    url = endpoint.rstrip("/") + "/metrics"
    with httpx.stream("GET", url, timeout=METRICS_TIMEOUT) as answer:
        answer.raise_for_status()
        received = b""
        for chunk in answer.iter_bytes():
            received += chunk
            if len(received) > METRICS_MAX_BYTES:
                raise ValueError(f"{url} answered more than {METRICS_MAX_BYTES} bytes")
    return received.decode("utf-8", "replace")


def read_counts(
    endpoint: str | None, stable: str | None, canary: str | None, kube: Kube | None = None
) -> Observations:
    """Per-variant counts from the gateway's /metrics (raises httpx, API and ValueError
    errors)."""
    if not endpoint:
        raise ValueError("no gateway endpoint in status yet")
    return observations_for(parse_gateway(_metrics_text(endpoint, kube)), stable, canary)


def counts_or_reason(
    body: dict[str, Any], kube: Kube | None = None
) -> tuple[Observations | None, str | None]:
    """The counts for status' view, or why there are none (never raises)."""
    status = body.get("status") or {}
    # The gateway's metrics listener; a status from before it had one names the endpoint.
    metrics = status.get("metricsEndpoint") or status.get("endpoint")
    try:
        return (
            read_counts(metrics, status.get("stableModel"), status.get("canaryModel"), kube),
            None,
        )
    except (httpx.HTTPError, ValueError, *API_ERRORS) as error:
        return None, f"gateway metrics unavailable ({type(error).__name__}: {error})"


def _describe(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"the API server answered {error.status} {error.reason}"
    return f"cannot reach the API server: {error}"
