"""Helpers for tests/gitops/test_argocd.py: a local Git repository holding gitops/ and
crds/ (Argo CD reads it through a ``file://`` URL), the Application and AppProject from
gitops/argocd pointed at it, and the status documents a test writes while acting as the
controllers the embedded control plane lacks (the PV binder, the operator)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bertops.cluster import gitops_repo
from bertops.cluster.gitops_repo import LocalRepo

APP_PATH = "gitops/apps/sentiment/overlays/dev"
NAMESPACE = "bertops-demo"


def make_repo(where: Path) -> Path:
    """A Git repository with this checkout's gitops/ and crds/ (YAML) on branch main."""
    return LocalRepo.create(where).path


def commit(
    repo: Path, relative: str, change: Callable[[dict[str, Any]], None], message: str
) -> str:
    return LocalRepo(repo).edit(relative, change, message)


def project(repo_url: str) -> dict[str, Any]:
    return gitops_repo.project(repo_url, [NAMESPACE])


def application(repo_url: str) -> dict[str, Any]:
    return gitops_repo.application("sentiment", repo_url, APP_PATH, NAMESPACE)


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
