"""Shared by the Argo engine tests: example Workflows from the builder, the skip used when
Argo Workflows is not built, and running Argo's offline lint."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bertops.cluster.argo_workflows import build
from bertops.operator.config import OperatorConfig
from bertops.operator.runtime import argo_template
from bertops.operator.runtime import argo_workflow as argo

CONFIG = OperatorConfig(runtime="kubernetes", image="registry.example/trainer:1")

needs_argo = pytest.mark.skipif(
    not build.is_cached(),
    reason=f"Argo Workflows v{build.ARGO_VERSION} is not built in {build.argo_dir()}: "
    "run `make argo-workflows` (a few minutes, cached)",
)


def example_workflows(namespace: str = "default") -> dict[str, dict[str, Any]]:
    """Every shape the builder makes: the full pipeline with 1 and 3 ranks, each step
    alone."""
    found = {}
    for replicas in (1, 3):
        steps = argo_template.example_steps(namespace, replicas=replicas)
        name = f"pipeline-{replicas}"
        found[name] = argo.to_dict(argo.workflow(name, namespace, steps, CONFIG))
    for step in argo_template.example_steps(namespace, replicas=2):
        name = f"only-{step.kind}"
        found[name] = argo.to_dict(argo.workflow(name, namespace, [step], CONFIG))
    return found


def lint(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(build.lint_path()), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write(path: Path, body: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path
