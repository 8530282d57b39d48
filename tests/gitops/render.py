"""Helpers for the gitops tests: find every kustomization under gitops/ (and crds/),
render it with ``kubectl kustomize`` and split the result into documents. Used by
tests/gitops/test_kustomize.py, test_rbac.py and test_argocd.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GITOPS = ROOT / "gitops"


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is not on the PATH (the README's prerequisites include it)")
    return found


def kustomizations() -> list[Path]:
    """Every buildable kustomization (Components are built only through their users)."""
    found = []
    for path in sorted(GITOPS.rglob("kustomization.yaml")):
        if yaml.safe_load(path.read_text()).get("kind") != "Component":
            found.append(path.parent)
    return found


def render(directory: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [doc for doc in by_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def kubectl_run(kubeconfig: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl(), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def apply(kubeconfig: Path, docs: list[dict[str, Any]], *flags: str) -> str:
    """Server-side apply documents (as the admin), failing the test on any error."""
    import yaml as _yaml

    proc = kubectl_run(
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        *flags,
        "-f",
        "-",
        stdin=_yaml.safe_dump_all(docs),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
