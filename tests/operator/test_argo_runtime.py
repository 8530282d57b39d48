"""The Argo runtime's mapping of a Workflow to a step observation (pure), its refusal
when the cluster serves no Argo Workflow kind, and removing only finished Workflows."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from bertops.api.steps import StepResult
from bertops.operator.runtime import argo_workflow as argo
from bertops.operator.runtime.argo import ArgoNotInstalledError, ArgoRuntime, observation
from bertops.operator.runtime.base import REASON_RESULT_UNREADABLE, StepPhase
from tests.operator.argo_helpers import CONFIG


def result(succeeded: bool = True, exit_code: int = 0) -> str:
    return StepResult(
        kind="train",
        name="run-1-train",
        succeeded=succeeded,
        exit_code=exit_code,
        metrics={"accuracy": 0.9},
    ).compact_json()


def node(
    rank: int, value: str, exit_code: str | None = None, started: str = "2026-01-01T00:00:00Z"
) -> dict[str, Any]:
    outputs: dict[str, Any] = {"parameters": [{"name": "result", "value": value}]}
    if exit_code is not None:
        outputs["exitCode"] = exit_code
    return {
        "type": "Pod",
        "templateName": "train",
        "startedAt": started,
        "displayName": f"train({rank})",
        "outputs": outputs,
    }


def workflow(phase: str, *nodes: dict[str, Any], message: str = "") -> dict[str, Any]:
    return {
        "metadata": {"name": "run-1-train", "labels": {argo.STEP_KIND_LABEL: "train"}},
        "status": {
            "phase": phase,
            "message": message,
            "finishedAt": "2026-01-01T00:05:00+00:00",
            "nodes": {f"n{i}": n for i, n in enumerate(nodes)}
            | {"dag": {"type": "DAG", "templateName": "pipeline"}},
        },
    }


@pytest.mark.parametrize("phase", ["", "Pending", "Running"])
def test_running(phase: str) -> None:
    assert observation(workflow(phase), "train").phase == StepPhase.RUNNING


def test_succeeded_reads_rank_zero_result() -> None:
    found = observation(workflow("Succeeded", node(0, result()), node(1, "")), "train")
    assert found.phase == StepPhase.SUCCEEDED and found.exit_code == 0
    assert found.result is not None and found.result.metrics == {"accuracy": 0.9}
    assert found.ended_at is not None


def test_succeeded_without_result_is_unreadable() -> None:
    found = observation(workflow("Succeeded", node(0, "not json"), node(1, "")), "train")
    assert found.phase == StepPhase.FAILED and found.reason == REASON_RESULT_UNREADABLE


def test_failed_carries_exit_code_and_result_message() -> None:
    failing = StepResult(kind="train", name="x", succeeded=False, exit_code=2, message="bad labels")
    found = observation(
        workflow(
            "Failed",
            node(0, "", exit_code="3", started="1"),
            node(0, failing.compact_json(), exit_code="2", started="2"),
        ),
        "train",
    )
    assert found.phase == StepPhase.FAILED and found.exit_code == 2
    assert found.message == "Workflow failed: bad labels"


def test_error_without_nodes_says_why() -> None:
    found = observation(workflow("Error", message="pod deleted"), "train")
    assert found.phase == StepPhase.FAILED and found.exit_code is None
    assert found.message == "Workflow error: pod deleted"


class NoArgo:
    def read(self, *args: Any) -> Any:
        raise ResourceNotFoundError("No matches found for {'kind': 'Workflow'}")


def test_missing_argo_crds_are_named() -> None:
    runtime = ArgoRuntime(CONFIG, NoArgo())  # type: ignore[arg-type]  # a fake Kube
    with pytest.raises(ArgoNotInstalledError, match="needs Argo Workflows") as caught:
        runtime.observe("default", "run-1-train")
    assert caught.value.reason == "ArgoNotInstalled"


class Workflows:
    """The reads and deletes ArgoRuntime.remove makes, over stored Workflows."""

    def __init__(self, **phases: str) -> None:
        self.found = {
            name: {**workflow(phase), "metadata": {"name": name, "uid": f"uid-{name}"}}
            for name, phase in phases.items()
        }
        self.deleted: list[tuple[str, str | None]] = []

    def read(self, api_version: str, kind: str, namespace: str, name: str) -> Any:
        assert (api_version, kind) == (argo.API_VERSION, "Workflow")
        return self.found.get(name)

    def delete(
        self, api_version: str, kind: str, namespace: str, name: str, uid: str | None = None
    ) -> bool:
        self.deleted.append((name, uid))
        return self.found.pop(name, None) is not None


def test_remove_deletes_a_finished_workflow_only() -> None:
    kube = Workflows(done="Succeeded", failed="Failed", running="Running", pending="")
    runtime = ArgoRuntime(CONFIG, kube)  # type: ignore[arg-type]  # a fake Kube
    assert runtime.remove("ns", "done") is True and runtime.remove("ns", "failed") is True
    assert runtime.remove("ns", "running") is False and runtime.remove("ns", "pending") is False
    assert runtime.remove("ns", "absent") is False
    assert kube.deleted == [("done", "uid-done"), ("failed", "uid-failed")]
    assert set(kube.found) == {"running", "pending"}
