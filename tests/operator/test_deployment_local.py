"""BertDeployment end to end with the local runtime on the real API server: real model
servers and a real gateway on loopback, tiny models with known behaviour. A first model
goes straight to stable; a good canary is rolled out step by step and promoted; a bad
one (erroring, or diverging in its predictions) rolls back on its own; a steady client
sees no failed request meanwhile; an operator restarted mid-rollout resumes at the same
step with the same processes; the user's spec is never written."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from bertops.operator.deployment.processes import free_port
from bertops.operator.kube import Kube
from tests.operator.conftest import has_event, reasons, wait_events
from tests.operator.serving_helpers import (
    SteadyClient,
    constant_artifact,
    copy_artifact,
    deployment,
    erroring_artifact,
    model,
    serving_pids,
)
from tests.waiting import condition_of as condition
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serving-artifacts")
    stable = constant_artifact(root / "v1", "tiny-v1", "negative")
    return {
        "v1": stable,
        "good": copy_artifact(stable, root / "v2", "tiny-v2"),
        "diverging": constant_artifact(root / "v2-positive", "tiny-v2p", "positive"),
        "erroring": erroring_artifact(root / "v2-broken", "tiny-v2e"),
    }


@pytest.fixture
def state(tmp_path: Path) -> Path:
    # The operator fixture stops the serving processes (and fails a test that leaks one).
    return tmp_path / "state"


def status_of(kube: Kube, namespace: str, name: str = "web") -> dict[str, Any]:
    return (kube.get("BertDeployment", namespace, name) or {}).get("status") or {}


def ready_model(kube: Kube, namespace: str, name: str, artifact: Path) -> None:
    kube.create(model(namespace, name, artifact))
    wait_for(
        lambda: (
            (condition(kube.get("BertModel", namespace, name), "Ready") or {}).get("status")
            == "True"
        ),
        timeout=30,
        what=f"BertModel {name} Ready",
    )


def serving_stable(kube: Kube, namespace: str, want: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        st = status_of(kube, namespace)
        ready = condition({"status": st}, "Ready") or {}
        return st if st.get("stableModel") == want and ready.get("status") == "True" else None

    found: dict[str, Any] = wait_for(check, timeout=timeout, what=f"stable {want}")
    return found


def predict(endpoint: str) -> httpx.Response:
    return httpx.post(endpoint + "/predict", json={"texts": ["a fine day"]}, timeout=30)


def test_first_model_goes_straight_to_stable(
    kube_layer: Kube,
    namespace: str,
    start_operator: Any,
    artifacts: dict[str, Path],
    state: Path,
    cluster: Any,
) -> None:
    start_operator(namespace, state_dir=state)
    ready_model(kube_layer, namespace, "tiny-v1", artifacts["v1"])
    created = kube_layer.create(deployment(namespace))
    st = serving_stable(kube_layer, namespace, "tiny-v1")
    assert st["endpoint"].startswith("http://127.0.0.1:")
    assert not st.get("canaryModel") and st["observedGeneration"] == 1
    answer = wait_for(lambda: (r := predict(st["endpoint"])).status_code == 200 and r, timeout=30)
    assert answer.json()["predictions"][0]["label"] == "negative"
    assert set(serving_pids(state, namespace, "web")) == {"gateway", "web-tiny-v1"}
    table = subprocess.run(
        ["kubectl", "get", "bertdeployment", "web", "-n", namespace, "--no-headers"],
        env=dict(os.environ, KUBECONFIG=str(cluster.kubeconfig)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # NAME STABLE (CANARY) WEIGHT (DRIFT) READY REASON AGE: empty cells print nothing.
    assert table[:5] == ["web", "tiny-v1", "0", "True", "Serving"], table
    after = kube_layer.get("BertDeployment", namespace, "web")
    assert after is not None and after["spec"] == created["spec"]
    assert after["metadata"]["generation"] == created["metadata"]["generation"]
    # Deleting the deployment stops its servers and gateway (behind the finalizer).
    kube_layer.custom.delete_namespaced_custom_object(
        "bertops.io", "v1alpha1", namespace, "bertdeployments", "web"
    )
    wait_for(lambda: not serving_pids(state, namespace, "web"), timeout=30, what="serving stopped")
    with pytest.raises(httpx.ConnectError):
        predict(st["endpoint"])


def watch_rollout(kube: Kube, namespace: str, until: str, timeout: float = 90) -> list[Any]:
    """The (step, weight) pairs seen while waiting for the last history outcome ``until``."""
    seen: list[Any] = []

    def check() -> bool:
        st = status_of(kube, namespace)
        if st.get("canaryModel"):
            pair = (st.get("rolloutStep"), st.get("canaryWeight"))
            if not seen or seen[-1] != pair:
                seen.append(pair)
        history = st.get("history") or []
        return bool(history) and history[-1]["outcome"] == until and not st.get("canaryModel")

    try:
        wait_for(check, timeout=timeout, interval=0.1, what=f"rollout ending {until}")
    except AssertionError as error:
        raise AssertionError(f"{error}; seen {seen}; status {status_of(kube, namespace)}") from None
    return seen


def operator_metrics(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def test_good_canary_is_promoted_step_by_step_without_a_failed_request(
    kube_layer: Kube, namespace: str, start_operator: Any, artifacts: dict[str, Path], state: Path
) -> None:
    port = free_port()
    start_operator(namespace, state_dir=state, metrics_port=port)
    ready_model(kube_layer, namespace, "tiny-v1", artifacts["v1"])
    created = kube_layer.create(deployment(namespace))
    endpoint = serving_stable(kube_layer, namespace, "tiny-v1")["endpoint"]
    client = SteadyClient(endpoint).start()
    try:
        ready_model(kube_layer, namespace, "tiny-v2", artifacts["good"])
        steps = watch_rollout(kube_layer, namespace, "Promoted")
    finally:
        client.stop()
    st = status_of(kube_layer, namespace)
    assert st["stableModel"] == "tiny-v2" and st["endpoint"] == endpoint
    assert [w for _, w in steps] == [30, 60] and [s for s, _ in steps] == [0, 1]
    assert st["history"][-1]["model"] == "tiny-v2"
    gates = {g["name"]: g["result"] for g in st["analysis"]["gates"]} if st.get("analysis") else {}
    assert "Failed" not in gates.values()
    # The old stable's server was drained and stopped; the canary's became stable's.
    wait_for(
        lambda: set(serving_pids(state, namespace, "web")) == {"gateway", "web-tiny-v2"},
        timeout=20,
        what="the old stable stopped",
    )
    print(f"promotion: {client.sent} requests, {client.failed} failed")
    assert client.sent > 100 and client.failed == 0, client.failures[:5]
    wait_events(
        kube_layer,
        namespace,
        "web",
        lambda seen: {"CanaryInProgress", "StepAdvanced", "Promoted"} <= reasons(seen),
        "the rollout's Events",
    )
    text = operator_metrics(port)
    assert (
        'bertops_operator_rollout_outcomes_total{outcome="Promoted",reason="Promoted"} 1.0' in text
    )
    assert (
        f'bertops_operator_canary_weight_percent{{deployment="web",namespace="{namespace}"}} 0.0'
        in text
    )
    assert 'bertops_operator_rollout_analysis_total{gate="errorRate",result="Passed"}' in text
    after = kube_layer.get("BertDeployment", namespace, "web")
    assert after is not None and after["spec"] == created["spec"]
    assert after["metadata"]["generation"] == created["metadata"]["generation"]


def rolled_back(kube: Kube, namespace: str, model_name: str, artifact: Path) -> dict[str, Any]:
    """Roll out a bad canary over a serving tiny-v1 and wait until it is rolled back."""
    ready_model(kube, namespace, model_name, artifact)
    watch_rollout(kube, namespace, "RolledBack")
    st = status_of(kube, namespace)
    assert st["stableModel"] == "tiny-v1" and st["rejectedModel"] == model_name
    assert not st.get("canaryModel") and st["canaryWeight"] == 0
    assert st["history"][-1]["model"] == model_name
    return st


def test_diverging_canary_rolls_back_without_a_failed_request(
    kube_layer: Kube, namespace: str, start_operator: Any, artifacts: dict[str, Path], state: Path
) -> None:
    start_operator(namespace, state_dir=state)
    ready_model(kube_layer, namespace, "tiny-v1", artifacts["v1"])
    # Divergence gates only when its bound is set (a retrained model is meant to answer
    # differently); test_deployment_judgment shows the default promoting it.
    created = kube_layer.create(deployment(namespace, maxPredictionDivergence=0.2))
    endpoint = serving_stable(kube_layer, namespace, "tiny-v1")["endpoint"]
    client = SteadyClient(endpoint).start()
    try:
        st = rolled_back(kube_layer, namespace, "tiny-v2p", artifacts["diverging"])
        wait_for(
            lambda: set(serving_pids(state, namespace, "web")) == {"gateway", "web-tiny-v1"},
            timeout=20,
            what="the canary stopped",
        )
    finally:
        client.stop()
    degraded = condition({"status": st}, "Degraded") or {}
    assert (degraded.get("status"), degraded.get("reason")) == ("True", "DivergenceGateFailed")
    assert "divergence" in degraded["message"].lower()
    failed = [g["name"] for g in st["analysis"]["gates"] if g["result"] == "Failed"]
    assert failed and all("diverg" in name.lower() for name in failed), failed
    events = wait_events(
        kube_layer, namespace, "web", has_event("Warning", "DivergenceGateFailed"), "the Warning"
    )
    assert [e["reason"] for e in events if e["type"] == "Warning"] == ["DivergenceGateFailed"]
    print(f"rollback: {client.sent} requests, {client.failed} failed")
    assert client.sent > 50 and client.failed == 0, client.failures[:5]
    after = kube_layer.get("BertDeployment", namespace, "web")
    assert after is not None and after["spec"] == created["spec"]
    assert after["metadata"]["generation"] == created["metadata"]["generation"]


def test_erroring_canary_rolls_back_on_the_error_rate_gate(
    kube_layer: Kube, namespace: str, start_operator: Any, artifacts: dict[str, Path], state: Path
) -> None:
    start_operator(namespace, state_dir=state)
    ready_model(kube_layer, namespace, "tiny-v1", artifacts["v1"])
    kube_layer.create(deployment(namespace))
    endpoint = serving_stable(kube_layer, namespace, "tiny-v1")["endpoint"]
    client = SteadyClient(endpoint).start()
    try:
        st = rolled_back(kube_layer, namespace, "tiny-v2e", artifacts["erroring"])
    finally:
        client.stop()
    degraded = condition({"status": st}, "Degraded") or {}
    assert (degraded.get("status"), degraded.get("reason")) == ("True", "ErrorRateGateFailed")
    ready = condition({"status": st}, "Ready") or {}
    assert ready.get("status") == "True"  # stable kept serving throughout
    print(f"erroring canary: {client.sent} requests, {client.failed} failed (canary share)")
    # Only the canary's share failed, and only until the rollback.
    assert 0 < client.failed < client.sent, client.statuses
    for _ in range(5):
        assert predict(endpoint).status_code == 200


def test_restart_mid_rollout_resumes_at_the_same_step_with_the_same_processes(
    kube_layer: Kube, namespace: str, start_operator: Any, artifacts: dict[str, Path], state: Path
) -> None:
    first = start_operator(namespace, state_dir=state)
    ready_model(kube_layer, namespace, "tiny-v1", artifacts["v1"])
    # The first pause outlasts the operator's stop and restart even on a loaded CI machine
    # (12 s was once not enough: the canary was promoted before the check).
    steps = [{"weight": 30, "pauseSeconds": 40}, {"weight": 60, "pauseSeconds": 1}]
    created = kube_layer.create(deployment(namespace, steps=steps))
    endpoint = serving_stable(kube_layer, namespace, "tiny-v1")["endpoint"]
    client = SteadyClient(endpoint).start()
    try:
        ready_model(kube_layer, namespace, "tiny-v2", artifacts["good"])
        wait_for(
            lambda: (
                len(serving_pids(state, namespace, "web")) == 3
                and (st := status_of(kube_layer, namespace)).get("stepStartedAt")
                and (st.get("analysis") or {}).get("gates")
            ),
            timeout=60,
            what="the canary analysed at step 1, its pause running (the gateway carries it)",
        )
        before = status_of(kube_layer, namespace)
        pids = serving_pids(state, namespace, "web")
        first.stop()
        start_operator(namespace, state_dir=state)
        wait_for(
            lambda: (
                status_of(kube_layer, namespace).get("analysis", {}).get("at")
                != before["analysis"]["at"]
            ),
            timeout=30,
            what="the restarted operator analysing",
        )
        resumed = status_of(kube_layer, namespace)
        assert (resumed["canaryModel"], resumed["rolloutStep"], resumed["canaryWeight"]) == (
            "tiny-v2",
            0,
            30,
        )
        assert resumed["stepStartedAt"] == before["stepStartedAt"]  # the pause is not reset
        assert serving_pids(state, namespace, "web") == pids  # adopted, none restarted
        watch_rollout(kube_layer, namespace, "Promoted")
    finally:
        client.stop()
    assert serving_pids(state, namespace, "web")["web-tiny-v2"] == pids["web-tiny-v2"]
    assert serving_pids(state, namespace, "web")["gateway"] == pids["gateway"]
    print(f"restart: {client.sent} requests, {client.failed} failed")
    assert client.failed == 0, client.failures[:5]
    after = kube_layer.get("BertDeployment", namespace, "web")
    assert after is not None and after["spec"] == created["spec"]
    assert after["metadata"]["generation"] == created["metadata"]["generation"]
