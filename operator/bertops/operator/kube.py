"""The one layer of the operator that talks to the Kubernetes API (besides kopf's own
watching): read bertops objects, create children, patch status through the status
subresource, post Events, and apply the Jobs/Services/ConfigMaps of the kubernetes
runtime. Everything above it works with plain dicts and pydantic types. The leader
election (:mod:`bertops.operator.leader`) uses this layer's ApiClient for its Lease.

``bertops rollout`` (:mod:`bertops.cli.rollout_client`) acts through it too. The
management service has its own, :class:`bertops.ui.catalog.Catalog`, on purpose: it acts
with each caller's credentials (one ApiClient per bearer token) and turns API errors into
the HTTP status to answer, while this layer acts with the operator's own identity and
retries. Both find the kubeconfig's namespace with :func:`context_namespace`.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException

from bertops.api.kinds import GROUP, VERSION, kind_info

log = logging.getLogger(__name__)
FIELD_MANAGER = "bertops-operator"


class NameConflictError(Exception):
    """A child's name is taken by an object this owner does not own: never adopted."""

    def __init__(self, manifest: dict[str, Any], why: str) -> None:
        meta = manifest["metadata"]
        self.kind, self.name = manifest["kind"], meta["name"]
        super().__init__(f"{self.kind} {meta['namespace']}/{self.name} already exists and {why}")


def owner_uids(body: dict[str, Any]) -> set[str]:
    refs = body.get("metadata", {}).get("ownerReferences") or []
    return {ref["uid"] for ref in refs if ref.get("uid")}


def shares_owner(manifest: dict[str, Any], existing: dict[str, Any]) -> bool:
    """Whether an existing object is the child the manifest describes (same owner UID)."""
    return bool(owner_uids(manifest) & owner_uids(existing))


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self._dynamic: dynamic.DynamicClient | None = None

    @classmethod
    def from_kubeconfig(cls, path: str | None = None) -> Kube:
        try:
            config.load_incluster_config()
            return cls(client.ApiClient())
        except config.ConfigException:
            return cls(config.new_client_from_config(config_file=path))

    # -- bertops objects -------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, kind_info(kind).plural, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return cast(dict[str, Any], body)

    def list_objects(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        """Every bertops object of a kind in a namespace (a BertDeployment's candidates)."""
        listed = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, kind_info(kind).plural
        )
        return list(cast(dict[str, Any], listed).get("items") or [])

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create an owned bertops object. When one of that name exists it is returned only
        if it shares an owner UID with the manifest (our own child, e.g. created before a
        restart); anything else is someone else's object: :class:`NameConflictError`."""
        meta = manifest["metadata"]
        plural = kind_info(manifest["kind"]).plural
        try:
            created = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], plural, manifest
            )
            return cast(dict[str, Any], created)
        except ApiException as error:
            if error.status != 409:
                raise
        existing = self.get(manifest["kind"], meta["namespace"], meta["name"])
        if existing is None:  # deleted between our create and get: level-based, try later
            raise NameConflictError(manifest, "it was being deleted; retrying")
        if not shares_owner(manifest, existing):
            raise NameConflictError(manifest, "it is not owned by this object")
        return existing

    def patch_status(
        self, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Server-side apply the whole status the planner computed, as field manager
        ``bertops-operator``: fields we applied before and left out now are removed, while
        fields other writers own (a newer component, a person) stay. No read first, so no
        lost update between a GET and the write."""
        info = kind_info(kind)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": info.kind,
            "metadata": {"name": name, "namespace": namespace},
            "status": status,
        }
        patched = self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            info.plural,
            name,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        return cast(dict[str, Any], patched)

    # -- events ----------------------------------------------------------------------------

    def event(
        self,
        obj: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        component: str = "bertops-operator",
    ) -> None:
        """Post a core/v1 Event about obj (what `kubectl describe` shows). The body is a
        plain dict and the answer is not parsed: the client's model classes would cost
        more CPU than the request itself, and nothing reads the answer."""
        meta = obj["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event: Any = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:12]}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": component,
        }
        try:
            response: Any = self.core.create_namespaced_event(
                meta["namespace"], event, _preload_content=False
            )
            response.read()  # drained, so the connection goes back to the pool
            response.release_conn()
        except ApiException as error:  # an Event is best-effort; never fail a reconcile
            log.warning("could not post event %s: %s", reason, error.reason)

    def events_for(self, namespace: str, name: str) -> list[dict[str, Any]]:
        listed = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        )
        return [{"type": e.type, "reason": e.reason, "message": e.message} for e in listed.items]

    # -- generic resources (kubernetes runtime) ----------------------------------------------

    @property
    def dynamic(self) -> dynamic.DynamicClient:
        if self._dynamic is None:
            self._dynamic = dynamic.DynamicClient(self.api_client)
        return self._dynamic

    def apply(self, manifest: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply any manifest (Jobs, Services, ConfigMaps)."""
        resource = self.dynamic.resources.get(
            api_version=manifest["apiVersion"], kind=manifest["kind"]
        )
        kwargs: dict[str, Any] = {"field_manager": FIELD_MANAGER, "force_conflicts": True}
        if dry_run:
            kwargs["dry_run"] = "All"
        applied = resource.server_side_apply(
            body=manifest, namespace=manifest["metadata"].get("namespace"), **kwargs
        )
        return applied.to_dict()

    def read(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
        try:
            return resource.get(name=name, namespace=namespace).to_dict()
        except dynamic.exceptions.NotFoundError:
            return None

    def list_resources(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
        found = resource.get(namespace=namespace, label_selector=label_selector)
        return [item.to_dict() for item in found.items]

    def delete(
        self, api_version: str, kind: str, namespace: str, name: str, uid: str | None = None
    ) -> bool:
        """Delete an object, its dependents in the background (a Job's pods); False when it
        was not there. With ``uid``, only that very object: one re-created under the same
        name meanwhile is left alone (False)."""
        resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
        # The API server reads a body's options instead of the query's, so both say it.
        body = {"propagationPolicy": "Background", "preconditions": {"uid": uid}} if uid else None
        try:
            resource.delete(
                name=name, namespace=namespace, body=body, propagation_policy="Background"
            )
        except dynamic.exceptions.NotFoundError:
            return False
        except dynamic.exceptions.ConflictError:
            if uid is None:
                raise
            return False  # the uid precondition failed: another object by now
        return True


def context_namespace(kubeconfig: str | None) -> str:
    """The current context's namespace, as kubectl picks it ("default" when unset)."""
    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError, TypeError):
        return "default"  # in-cluster, or no kubeconfig: kubectl's default too
    return str((active or {}).get("context", {}).get("namespace") or "default")
