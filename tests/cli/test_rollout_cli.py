"""``bertops rollout`` on the real API server: a BertDeployment's status is patched into
each rollout state and ``status`` must exit with that state's code; the actions write
only the annotation (spec and generation unchanged), and ``--wait`` reports what the
operator did with the value (applied, refused, or not handled in time). The operator is
played by a thread that writes ``status.handledActions`` the way the reconciler does."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, cast

import pytest
from typer.testing import CliRunner

from bertops.api.kinds import GROUP, VERSION
from bertops.cli.main import app
from bertops.operator.kube import Kube
from bertops.operator.rollout.actions import ANNOTATION
from tests.cli.rollout_states import STATES
from tests.integration import manifests as m

pytestmark = pytest.mark.integration
NAME = "sentiment"


@pytest.fixture
def layer(kube: Any) -> Kube:
    return Kube(kube)


@pytest.fixture
def created(layer: Kube, namespace: str) -> dict[str, Any]:
    body = m.with_path(m.deployment(NAME), "metadata.namespace", namespace)
    answer = layer.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "bertdeployments", body
    )
    return cast(dict[str, Any], answer)  # the client answers ``object``: the JSON document


def cli(cluster: Any, namespace: str, *args: str) -> Any:
    argv = ["rollout", *args, NAME, "-n", namespace, "--kubeconfig", str(cluster.kubeconfig)]
    return CliRunner().invoke(app, argv)


@pytest.mark.parametrize("state", sorted(STATES))
def test_status_exit_code_of_each_state(
    state: str, cluster: Any, layer: Kube, namespace: str, created: dict[str, Any]
) -> None:
    status, phase, code = STATES[state]
    if status is not None:
        clean = {k: v for k, v in status.items() if v is not None}
        layer.patch_status("BertDeployment", namespace, NAME, clean)
    result = cli(cluster, namespace, "status", "--no-counts")
    assert result.exit_code == code, result.output
    assert phase in result.output
    as_json = cli(cluster, namespace, "status", "--json")
    assert json.loads(as_json.output)["phase"] == phase


def test_status_of_a_missing_deployment_exits_3(cluster: Any, namespace: str) -> None:
    assert cli(cluster, namespace, "status").exit_code == 3
    assert cli(cluster, namespace, "promote").exit_code == 3


def test_status_timeout_gives_up_on_a_rollout_in_progress(
    cluster: Any, layer: Kube, namespace: str, created: dict[str, Any]
) -> None:
    layer.patch_status("BertDeployment", namespace, NAME, STATES["progressing"][0] or {})
    started = time.monotonic()
    result = cli(cluster, namespace, "status", "--timeout", "1", "--no-counts")
    assert result.exit_code == 2, result.output
    assert 1 <= time.monotonic() - started < 20


@pytest.mark.parametrize("action", ["promote", "abort", "pause", "resume", "retry"])
def test_actions_write_only_the_annotation(
    action: str, cluster: Any, layer: Kube, namespace: str, created: dict[str, Any]
) -> None:
    layer.patch_status("BertDeployment", namespace, NAME, STATES["progressing"][0] or {})
    before = layer.get("BertDeployment", namespace, NAME)
    assert before is not None
    first = cli(cluster, namespace, action)
    second = cli(cluster, namespace, action)
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    after = layer.get("BertDeployment", namespace, NAME)
    assert after is not None
    value = after["metadata"]["annotations"][ANNOTATION]
    assert value.startswith(f"{action}/") and value in second.output
    assert value not in first.output  # every call writes a fresh nonce
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"] == created["spec"]
    assert after["status"] == before["status"]


class FakeOperator:
    """Plays the reconciler's part for --wait: records the annotation's value in
    status.handledActions, optionally after posting the Event a refused action gets."""

    def __init__(self, layer: Kube, namespace: str, refuse: bool = False) -> None:
        self.layer, self.namespace, self.refuse = layer, namespace, refuse
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(0.2):
            body = self.layer.get("BertDeployment", self.namespace, NAME)
            value = ((body or {}).get("metadata", {}).get("annotations") or {}).get(ANNOTATION)
            if body is None or value is None:
                continue
            if self.refuse:
                message = f"promote has nothing to act on now ({value})"
                self.layer.event(body, "Warning", "RolloutActionIgnored", message)
            status = {**(STATES["healthy"][0] or {}), "handledActions": [value]}
            self.layer.patch_status("BertDeployment", self.namespace, NAME, status)
            return

    def __enter__(self) -> FakeOperator:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def progressing(layer: Kube, namespace: str, created: dict[str, Any]) -> None:
    layer.patch_status("BertDeployment", namespace, NAME, STATES["progressing"][0] or {})


@pytest.mark.usefixtures("progressing")
def test_wait_reports_an_applied_action(cluster: Any, layer: Kube, namespace: str) -> None:
    with FakeOperator(layer, namespace):
        result = cli(cluster, namespace, "promote", "--wait", "--timeout", "30")
    assert result.exit_code == 0, result.output
    assert "applied: Healthy" in result.output


@pytest.mark.usefixtures("progressing")
def test_wait_reports_a_refused_action(cluster: Any, layer: Kube, namespace: str) -> None:
    with FakeOperator(layer, namespace, refuse=True):
        result = cli(cluster, namespace, "promote", "--wait", "--timeout", "30")
    assert result.exit_code == 1, result.output
    assert "refused" in result.output and "nothing to act on" in result.output


@pytest.mark.usefixtures("progressing")
def test_wait_without_an_operator_times_out_with_2(cluster: Any, namespace: str) -> None:
    result = cli(cluster, namespace, "pause", "--wait", "--timeout", "1")
    assert result.exit_code == 2, result.output
    assert "not applied within 1s" in result.output


@pytest.mark.parametrize(
    ("state", "code"), [("healthy", 0), ("rolled-back", 1), ("progressing", 2)]
)
def test_watch_ends_when_final_or_at_the_timeout(
    state: str, code: int, cluster: Any, layer: Kube, namespace: str, created: dict[str, Any]
) -> None:
    layer.patch_status("BertDeployment", namespace, NAME, STATES[state][0] or {})
    started = time.monotonic()
    result = cli(cluster, namespace, "status", "--watch", "--timeout", "1", "--no-counts")
    assert result.exit_code == code, result.output
    assert STATES[state][1] in result.output and "sentiment-v1" in result.output
    assert time.monotonic() - started < 20
