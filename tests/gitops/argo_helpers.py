"""Helpers for tests/gitops/test_argocd.py: a local Git repository holding gitops/ and
crds/ (Argo CD reads it through a ``file://`` URL), the Application and AppProject from
gitops/argocd pointed at it, and the status documents a test writes while acting as the
controllers the embedded control plane lacks (the PV binder, the operator)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from tests.gitops.render import GITOPS, ROOT

APP_PATH = "gitops/apps/sentiment/overlays/dev"
NAMESPACE = "bertops-demo"


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def make_repo(where: Path) -> Path:
    """A Git repository with this checkout's gitops/ and crds/ (YAML) on branch main."""
    repo = where / "bertops-gitops"
    shutil.copytree(GITOPS, repo / "gitops")
    (repo / "crds").mkdir()
    for path in (ROOT / "crds").glob("*.yaml"):
        shutil.copy(path, repo / "crds" / path.name)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "test@bertops.invalid")
    git(repo, "config", "user.name", "bertops test")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "bertops gitops")
    return repo


def commit(
    repo: Path, relative: str, change: Callable[[dict[str, Any]], None], message: str
) -> str:
    path = repo / relative
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    git(repo, "commit", "-q", "-am", message)
    return git(repo, "rev-parse", "HEAD")


def project(repo_url: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((GITOPS / "argocd/project/appproject.yaml").read_text())
    doc["spec"]["sourceRepos"] = [repo_url]
    # The embedded cluster is registered by name (bertops.cluster.argocd.run.CLUSTER_NAME).
    doc["spec"]["destinations"].append({"name": "embedded", "namespace": NAMESPACE})
    doc["metadata"].pop("finalizers", None)
    return doc


def application(repo_url: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((GITOPS / "argocd/apps/sentiment.yaml").read_text())
    doc["spec"]["source"].update(repoURL=repo_url, targetRevision="main", path=APP_PATH)
    doc["spec"]["destination"] = {"name": "embedded", "namespace": NAMESPACE}
    return doc


def wait_for(check: Callable[[], Any], what: str, timeout: float, log: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{log()}")


def condition(
    type_: str, status: str, reason: str, message: str, generation: int
) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "observedGeneration": generation,
    }


def operator_status(kind: str, generation: int) -> dict[str, Any]:
    """What the operator writes once each object is done (reasons from bertops.api)."""
    c = condition
    g = generation
    if kind == "BertDataset":
        return {
            "observedGeneration": g,
            "artifactUri": f"/artifacts/{NAMESPACE}/datasets/sentiment-tweets/g{g}",
            "conditions": [c("Ready", "True", "Prepared", "900 rows prepared", g)],
        }
    if kind == "BertTraining":
        return {
            "observedGeneration": g,
            "conditions": [
                c("Succeeded", "True", "Completed", "registered BertModel sentiment-minilm-v1", g),
                c("Progressing", "False", "Completed", "registered", g),
            ],
        }
    if kind == "BertModel":
        return {
            "observedGeneration": g,
            "conditions": [c("Ready", "True", "Verified", "verified, macro-F1 0.71", g)],
        }
    return {
        "observedGeneration": g,
        "conditions": [
            c("Ready", "True", "Serving", "serving sentiment-minilm-v1", g),
            c("Progressing", "False", "Serving", "no rollout", g),
            c("Degraded", "False", "Serving", "", g),
            c("Drifted", "False", "NoDrift", "score 0.05", g),
        ],
    }


def paused(generation: int) -> dict[str, Any]:
    status = operator_status("BertDeployment", generation)
    status["conditions"][1] = condition(
        "Progressing", "Unknown", "RolloutPaused", "rollout paused; analysis continues", generation
    )
    return status
