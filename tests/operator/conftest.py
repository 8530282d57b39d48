"""Fixtures for operator integration tests: the real operator (kopf + reconcilers) run
in-process against the session's real API server, one per test, stopped afterwards."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bertops.operator.config import OperatorConfig
from bertops.operator.kube import Kube


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


@pytest.fixture
def start_operator(
    cluster: Any, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
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
    for operator in running:
        if operator.thread.is_alive():
            operator.stop()
    # Whatever a stopped operator left unclosed (a socket, a transport) warns when it is
    # collected: collect now, so the warning fails this test and not a later one.
    gc.collect()


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 60,
    interval: float = 0.25,
    what: str = "condition",
) -> Any:
    """Poll until predicate returns something truthy; fail with what we waited for."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def condition(body: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for found in ((body or {}).get("status") or {}).get("conditions") or []:
        if found["type"] == type_:
            return found  # type: ignore[no-any-return]
    return None
