"""The ``artifacts-object-store`` gitops component: an operator install with it renders,
reads its credentials from the very Secret and ConfigMap that ``bertops cluster storage
up`` creates (bertops.cluster.storage.cluster_objects), sets an ``s3://`` artifact root,
and passes server-side dry-run on the embedded API server beside a real such Secret."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bertops.cluster.storage.cluster_objects import NAME, SECRET_KEYS, manifests
from tests.gitops.render import GITOPS, apply, one, render

ENV = {
    "AWS_ACCESS_KEY_ID": "BERTOPSTESTKEY000000",
    "AWS_SECRET_ACCESS_KEY": "not-a-real-secret-key-for-the-dry-run-0000",
    "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _overlay(tmp_path: Path, namespace: str = "bertops-system") -> Path:
    """A kustomization of the operator base with the component (the way a team's own
    overlay would use it), its objects in ``namespace``."""
    base = os.path.relpath(GITOPS / "operator" / "base", tmp_path)
    component = os.path.relpath(GITOPS / "components" / "artifacts-object-store", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"namespace: {namespace}\nresources:\n- {base}\ncomponents:\n- {component}\n"
    )
    return tmp_path


def _operator(docs: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = one(docs, "Deployment", "bertops-operator")["spec"]["template"][
        "spec"
    ]["containers"][0]
    return container


def test_the_component_reads_the_secret_storage_up_creates(tmp_path: Path) -> None:
    docs = render(_overlay(tmp_path))
    container = _operator(docs)
    sources = {
        (kind, ref["name"])
        for entry in container["envFrom"]
        for kind, ref in entry.items()
        if kind in ("configMapRef", "secretRef")
    }
    assert sources == {("configMapRef", NAME), ("secretRef", NAME)}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["BERTOPS_ARTIFACT_ROOT"].startswith("s3://")
    config = one(docs, "ConfigMap", NAME)["data"]
    assert not set(config) & set(SECRET_KEYS)  # nothing secret in Git
    created = {d["kind"]: d for d in manifests("bertops-system", ENV)}
    assert set(created["ConfigMap"]["data"]) == set(config) | {"AWS_DEFAULT_REGION"}
    assert created["Secret"]["metadata"]["name"] == NAME


@pytest.mark.integration
def test_the_install_with_it_passes_server_side_dry_run(tmp_path: Path, cluster: Any) -> None:
    # A namespace of its own: the session's API server may hold another test's operator
    # Deployment in bertops-system, with which an apply by another manager would merge.
    namespace = f"bertops-s3-{os.getpid()}"
    docs = render(_overlay(tmp_path, namespace))
    first = [d for d in docs if d["kind"] in ("CustomResourceDefinition", "Namespace")]
    assert ("Namespace", namespace) in {(d["kind"], d["metadata"]["name"]) for d in first}
    apply(cluster.kubeconfig, first + manifests(namespace, ENV)[1:2])  # the Secret
    rest = [d for d in docs if d not in first]
    out = apply(cluster.kubeconfig, rest, "--dry-run=server", "--field-manager=gitops-test")
    assert "deployment.apps/bertops-operator serverside-applied (server dry run)" in out
