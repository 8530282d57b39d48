"""A local Git repository that Argo CD syncs from (``file://``): this checkout's gitops/
tree and generated CRDs, plus a ``local/`` folder of overlays for one machine's node
(the artifact PersistentVolumes pointed at the node's artifact folder). Commits go
through the ``git`` command, as a user's would; Argo CD's repo-server reads the result.

Also the AppProject and Applications of gitops/argocd, pointed at this repository and at
the embedded cluster (registered by name, :data:`bertops.cluster.argocd.run.CLUSTER_NAME`).

Called by the node demo (:mod:`bertops.cluster.demo_node`), tests/gitops/test_argocd.py
and tests/node/test_gitops_loop.py.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHECKOUT = Path(__file__).resolve().parents[3]
CLUSTER_DESTINATION = "embedded"  # bertops.cluster.argocd.run.CLUSTER_NAME


class GitError(RuntimeError):
    """A git command failed; the message has its stderr."""


@dataclass(frozen=True)
class LocalRepo:
    path: Path

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def git(self, *args: str) -> str:
        proc = subprocess.run(
            ["git", "-C", str(self.path), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise GitError(f"git {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout.strip()

    @classmethod
    def create(cls, where: Path, checkout: Path = CHECKOUT) -> LocalRepo:
        """gitops/ and crds/*.yaml of the checkout, committed on branch main."""
        repo = cls(where / "bertops-gitops")
        shutil.copytree(checkout / "gitops", repo.path / "gitops")
        (repo.path / "crds").mkdir()
        for path in (checkout / "crds").glob("*.yaml"):
            shutil.copy(path, repo.path / "crds" / path.name)
        repo.git("init", "-q", "-b", "main")
        repo.git("config", "user.email", "demo@bertops.invalid")
        repo.git("config", "user.name", "bertops demo")
        repo.commit("bertops gitops")
        return repo

    def write(self, relative: str, documents: list[dict[str, Any]] | str) -> Path:
        path = self.path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        text = documents if isinstance(documents, str) else yaml.safe_dump_all(documents)
        path.write_text(text)
        return path

    def commit(self, message: str) -> str:
        """Commit everything in the work tree; the new revision."""
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")

    def edit(self, relative: str, change: Callable[[dict[str, Any]], None], message: str) -> str:
        """Change one YAML document and commit it; the new revision."""
        path = self.path / relative
        doc = yaml.safe_load(path.read_text())
        change(doc)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return self.commit(message)


def node_overlay(target: str, artifacts: Path) -> dict[str, Any]:
    """A kustomization for ``local/<name>``: ``target`` (relative to the repo root) with
    every hostPath PersistentVolume pointed at the node's artifact folder."""
    patch = [{"op": "replace", "path": "/spec/hostPath/path", "value": str(artifacts)}]
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [f"../../{target}"],
        "patches": [{"target": {"kind": "PersistentVolume"}, "patch": yaml.safe_dump(patch)}],
    }


def artifact_volume(namespace: str, artifacts: Path) -> dict[str, Any]:
    """The hostPath PersistentVolume a namespace's ``bertops-artifacts`` claim binds: the
    namespace's own folder of the store (``<artifacts>/<namespace>``), never the whole
    store, so a pod of this namespace cannot reach another namespace's files."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": f"bertops-artifacts-{namespace}",
            "labels": {"bertops.io/artifacts": "shared"},
        },
        "spec": {
            "capacity": {"storage": "20Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": namespace, "name": "bertops-artifacts"},
            "hostPath": {"path": str(artifacts / namespace), "type": "Directory"},
        },
    }


def project(repo_url: str, namespaces: list[str], checkout: Path = CHECKOUT) -> dict[str, Any]:
    """gitops/argocd's AppProject for this repository and the embedded cluster."""
    doc: dict[str, Any] = yaml.safe_load(
        (checkout / "gitops/argocd/project/appproject.yaml").read_text()
    )
    doc["spec"]["sourceRepos"] = [repo_url]
    doc["spec"]["destinations"] += [
        {"name": CLUSTER_DESTINATION, "namespace": namespace} for namespace in namespaces
    ]
    doc["metadata"].pop("finalizers", None)
    return doc


def application(
    template: str, repo_url: str, path: str, namespace: str, checkout: Path = CHECKOUT
) -> dict[str, Any]:
    """gitops/argocd/apps/<template>.yaml syncing ``path`` of this repository's main into
    the embedded cluster."""
    doc: dict[str, Any] = yaml.safe_load(
        (checkout / "gitops/argocd/apps" / f"{template}.yaml").read_text()
    )
    doc["spec"]["source"].update(repoURL=repo_url, targetRevision="main", path=path)
    doc["spec"]["destination"] = {"name": CLUSTER_DESTINATION, "namespace": namespace}
    return doc
