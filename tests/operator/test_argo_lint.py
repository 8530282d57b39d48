"""Argo's own offline lint (what `argo lint --offline` runs, built from the pinned module)
accepts every Workflow the builder makes and the WorkflowTemplate in gitops/argo, and
rejects a broken one (so a pass means the lint ran)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertops.operator.runtime import argo_template
from tests.operator.argo_helpers import example_workflows, lint, needs_argo, write

pytestmark = needs_argo


@pytest.mark.parametrize("name", sorted(example_workflows()))
def test_generated_workflow_passes_argo_lint(name: str, tmp_path: Path) -> None:
    path = write(tmp_path / f"{name}.yaml", example_workflows()[name])
    proc = lint([path])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no linting errors found" in proc.stdout


def test_workflow_template_passes_argo_lint() -> None:
    proc = lint([argo_template.TEMPLATE_PATH])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no linting errors found" in proc.stdout


def test_broken_workflow_fails_argo_lint(tmp_path: Path) -> None:
    body = example_workflows()["pipeline-3"]
    tasks = body["spec"]["templates"][0]["dag"]["tasks"]
    tasks[-1]["depends"] = "nowhere.Succeeded"
    proc = lint([write(tmp_path / "broken.yaml", body)])
    assert proc.returncode == 1
    assert "nowhere" in proc.stdout
