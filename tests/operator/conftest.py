"""Fixtures for operator integration tests: the real operator (kopf + reconcilers) run
in-process against the session's real API server, one per test, stopped afterwards."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bertops.operator.config import OperatorConfig
from bertops.operator.kube import Kube
from bertops.operator.runtime.local import recorded_alive, stop_recorded
from tests.waiting import wait_for

if TYPE_CHECKING:
    from bertops.cluster.argo_workflows.run import WorkflowController
    from bertops.cluster.controlplane import Cluster


@pytest.fixture
def kube_layer(kube: Any) -> Kube:
    return Kube(kube)


class RunningOperator:
    """An operator in a background thread; stop() ends it as SIGTERM would."""

    def __init__(self, config: OperatorConfig, kubeconfig: str, wait_ready: bool = True) -> None:
        from bertops.operator.run import run_operator

        self.config = config
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None

        def target() -> None:
            try:
                run_operator(
                    config,
                    kubeconfig=kubeconfig,
                    stop_flag=self.stop_flag,
                    ready_flag=self.ready_flag,
                )
            except BaseException as error:  # surfaced by stop()
                self.error = error

        self.thread = threading.Thread(target=target, name="bertops-operator", daemon=True)
        self.thread.start()
        # A standby (another replica holds the Lease) is not ready until it takes over.
        if wait_ready and not self.ready_flag.wait(30):
            raise RuntimeError(f"operator did not become ready: {self.error}")

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "operator did not stop"
        if self.error is not None:
            raise self.error


def delete_deployments(kube: Any, namespaces: set[str], timeout: float = 60) -> None:
    """Delete the BertDeployments of these namespaces and wait until they are gone, so a
    running operator stops their servers and gateway (its finalizer) before it stops."""
    from kubernetes import client

    api = client.CustomObjectsApi(kube)
    args = ("bertops.io", "v1alpha1")

    def left() -> list[tuple[str, str]]:
        found = []
        for ns in sorted(namespaces):
            body: Any = api.list_namespaced_custom_object(*args, ns, "bertdeployments")
            found += [(ns, item["metadata"]["name"]) for item in body["items"]]
        return found

    for ns, name in left():
        api.delete_namespaced_custom_object(*args, ns, "bertdeployments", name)
    wait_for(lambda: not left(), timeout=timeout, what="the test's BertDeployments deleted")


@pytest.fixture
def start_operator(
    cluster: Any, kube: Any, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., RunningOperator]]:
    running: list[RunningOperator] = []

    def start(namespace: str, wait_ready: bool = True, **overrides: Any) -> RunningOperator:
        settings: dict[str, Any] = {
            "namespaces": (namespace,),
            "artifact_root": str(tmp_path / "artifacts"),
            # Test data lives under pytest's temporary folders, or (kubernetes runtime, Jobs
            # never run here) under /data as in tests/integration/manifests.py; anything
            # else is refused by the URI allowlist.
            "allowed_uri_prefixes": (str(tmp_path_factory.getbasetemp()), "/data"),
            "state_dir": tmp_path / "state",
            "poll_seconds": 0.5,
        }
        settings.update(overrides)
        operator = RunningOperator(
            OperatorConfig(**settings), str(cluster.kubeconfig), wait_ready=wait_ready
        )
        running.append(operator)
        return operator

    yield start
    # Serving processes outlive the operator on purpose (a restarted one adopts them), so
    # a test would leave its model servers (~870 MB each) and gateway running: delete the
    # deployments while the operator still runs, so its own cleanup stops them.
    live = [op for op in running if op.thread.is_alive()]
    try:
        if live:
            delete_deployments(kube, {ns for op in live for ns in op.config.namespaces})
    finally:  # a cleanup that timed out still stops the operators and the processes
        for operator in running:
            if operator.thread.is_alive():
                operator.stop()
    # Safety net, and the check that keeps the leak from coming back silently.
    states = {op.config.state_dir / "serving" for op in running}
    survivors = [folder for root in states for folder in recorded_alive(root)]
    for root in states:
        stop_recorded(root, timeout=5)
    # Whatever a stopped operator left unclosed (a socket, a transport) warns when it is
    # collected: collect now, so the warning fails this test and not a later one.
    gc.collect()
    assert not survivors, f"serving processes survived the test: {survivors}"


def wait_events(
    kube: Kube,
    namespace: str,
    name: str,
    enough: Callable[[list[dict[str, Any]]], bool],
    what: str,
    timeout: float = 30,
) -> list[dict[str, Any]]:
    """The Events about ``name`` once ``enough`` of them are there. The operator posts a
    pass's Events after it writes that pass's status, so a test that has just seen the
    status must wait for them rather than read them once."""
    found: list[dict[str, Any]] = []

    def ready() -> bool:
        found[:] = kube.events_for(namespace, name)
        return enough(found)

    try:
        wait_for(ready, timeout=timeout, what=f"Events about {name}: {what}")
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}; Events seen: {found}") from None
    return found


def has_event(type_: str, reason: str) -> Callable[[list[dict[str, Any]]], bool]:
    """An ``enough`` for wait_events: an Event of this type and reason is there."""
    return lambda events: any(e["type"] == type_ and e["reason"] == reason for e in events)


def reasons(events: list[dict[str, Any]]) -> set[str]:
    return {e["reason"] for e in events}


@pytest.fixture(scope="session")
def argo_crds(cluster: Cluster) -> None:
    """Argo Workflows' full CRDs on the session's API server (installed once)."""
    from bertops.cluster.argo_workflows.run import install_crds

    install_crds(cluster.kubeconfig)


@pytest.fixture(scope="session")
def controller(
    cluster: Cluster, argo_crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkflowController]:
    """Argo's real workflow controller on loopback, shared by every Argo test module: its
    start costs minutes on a busy 2-core machine."""
    from bertops.cluster.argo_workflows.run import WorkflowController

    running = WorkflowController(cluster.kubeconfig, tmp_path_factory.mktemp("argo"))
    running.up()
    yield running
    running.down()
