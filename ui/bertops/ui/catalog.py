"""The one layer of the management service that talks to the Kubernetes API: list and get
bertops objects, delete a model that no deployment serves, write the rollout-action
annotation, read a step's pod logs.

Used by the ``bertops models|datasets|trainings`` commands (:mod:`bertops.cli.models`) and by
the web UI and its JSON API (:mod:`bertops.ui.api`), so both see and change exactly the
same things. It returns plain dicts (the objects as the API server has them); shaping them
for people is :mod:`bertops.ui.views`. Errors of the API server become
:class:`CatalogError` with the HTTP status to answer, so callers never see urllib3 or
``ApiException``.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from bertops.api.kinds import GROUP, VERSION, kind_info
from bertops.operator.kube import context_namespace
from bertops.operator.rollout.actions import ACTIONS, ANNOTATION
from bertops.ui.views import serving_roles

# An object name as the API server accepts it (DNS subdomain): anything else is refused
# before a request is made, so odd input never reaches a URL path.
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
STEP_LABEL = "bertops.io/step"  # what the kubernetes runtime puts on a step's pods


class CatalogError(Exception):
    """Something the caller asked cannot be done; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ModelInUseError(CatalogError):
    """The model is served (or named) by deployments; deleting it needs ``force``."""

    def __init__(self, model: str, deployments: list[str]) -> None:
        names = ", ".join(deployments)
        super().__init__(
            409,
            f"model {model} is served by BertDeployment {names}; "
            "roll another model out first, or force the deletion",
        )
        self.deployments = deployments


def check_name(name: str, what: str = "name") -> str:
    if not NAME.match(name):
        raise CatalogError(422, f"invalid {what} {name[:80]!r}: not a Kubernetes object name")
    return name


def _translate(error: ApiException) -> CatalogError:
    """The API server's answer as a CatalogError: its own status for the ones a caller
    can act on, 502 for the rest (the fault is upstream, not in this service)."""
    status = error.status or 0
    message = str(error.reason or "error")
    body = getattr(error, "body", None)
    if isinstance(body, str | bytes) and body:
        with contextlib.suppress(ValueError, AttributeError):
            message = str(json.loads(body).get("message") or message)
    if status in (401, 403, 404, 409, 422):
        return CatalogError(status, message)
    return CatalogError(502, f"Kubernetes API error {status}: {message}")


def load_configuration(kubeconfig: str | None) -> client.Configuration:
    """The client configuration: in-cluster when running in a pod, else the kubeconfig."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration


def token_configuration(base: client.Configuration, token: str) -> client.Configuration:
    """The API server of ``base`` with only the caller's bearer token as credentials:
    no client certificate, no token of this service's own, so the API server judges the
    caller (the "pass the cluster's own token through" mode of the UI)."""
    configuration = client.Configuration()
    configuration.host = base.host
    configuration.ssl_ca_cert = base.ssl_ca_cert
    configuration.verify_ssl = base.verify_ssl
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return configuration


@dataclass
class Catalog:
    """bertops objects of one namespace, read and changed through one ApiClient."""

    api_client: client.ApiClient
    namespace: str

    @classmethod
    def connect(cls, kubeconfig: str | None = None, namespace: str | None = None) -> Catalog:
        configuration = load_configuration(kubeconfig)
        return cls(client.ApiClient(configuration), namespace or context_namespace(kubeconfig))

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api_client)

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except ApiException as error:
            raise _translate(error) from error
        except (HTTPError, OSError) as error:
            raise CatalogError(503, f"Kubernetes API unreachable: {error}") from error

    # -- reading ---------------------------------------------------------------------------

    def objects(self, kind: str) -> list[dict[str, Any]]:
        """Every object of a kind, sorted by name."""
        listed = self._call(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            kind_info(kind).plural,
        )
        items = cast(list[dict[str, Any]], listed.get("items", []))
        return sorted(items, key=lambda item: str(item["metadata"]["name"]))

    def get(self, kind: str, name: str) -> dict[str, Any]:
        info = kind_info(kind)
        check_name(name, f"{info.kind} name")
        try:
            body = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, info.plural, name
            )
        except ApiException as error:
            if error.status == 404:
                raise CatalogError(404, f"{info.kind} {self.namespace}/{name} not found") from error
            raise _translate(error) from error
        except (HTTPError, OSError) as error:
            raise CatalogError(503, f"Kubernetes API unreachable: {error}") from error
        return cast(dict[str, Any], body)

    def served_by(self, model: str) -> list[str]:
        """The deployments that serve ``model`` (stable or canary) or name it in spec."""
        return [
            body["metadata"]["name"]
            for body in self.objects("BertDeployment")
            if serving_roles(body, model)
        ]

    # -- changing --------------------------------------------------------------------------

    def delete_model(self, name: str, *, force: bool = False) -> list[str]:
        """Delete a BertModel; refused (:class:`ModelInUseError`) while a deployment
        serves it, unless ``force``. Returns the deployments that served it.

        The check and the delete are two requests: a deployment that starts serving the
        model in between is not seen. The operator's own selection then finds the model
        gone and reports it, so nothing is served from a deleted object unnoticed."""
        self.get("BertModel", name)
        serving = self.served_by(name)
        if serving and not force:
            raise ModelInUseError(name, serving)
        self._call(
            self.custom.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            kind_info("BertModel").plural,
            name,
            propagation_policy="Background",
        )
        return serving

    def rollout_action(self, deployment: str, action: str) -> str:
        """Ask the operator for a manual rollout action: the annotation
        ``bertops.io/rollout-action=<action>/<nonce>`` (see
        :mod:`bertops.operator.rollout.actions`); returns the value written."""
        if action not in ACTIONS:
            raise CatalogError(422, f"unknown rollout action {action!r}")
        self.get("BertDeployment", deployment)
        value = f"{action}/{int(time.time())}-{secrets.token_hex(4)}"
        patch = {"metadata": {"annotations": {ANNOTATION: value}}}
        self._call(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            kind_info("BertDeployment").plural,
            deployment,
            patch,
        )
        return value

    # -- step logs (kubernetes runtime) ---------------------------------------------------

    def step_pods(self, step: str) -> list[str]:
        core = client.CoreV1Api(self.api_client)
        pods = self._call(
            core.list_namespaced_pod, self.namespace, label_selector=f"{STEP_LABEL}={step}"
        )
        return sorted(pod.metadata.name for pod in pods.items)

    def pod_log(self, pod: str, tail_lines: int | None = None) -> str:
        core = client.CoreV1Api(self.api_client)
        kwargs: dict[str, Any] = {"tail_lines": tail_lines} if tail_lines else {}
        return str(self._call(core.read_namespaced_pod_log, pod, self.namespace, **kwargs))
