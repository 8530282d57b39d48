"""The loop on a real S3 server (VersityGW, tests/s3.py): an operator whose artifact root
is ``s3://bertops/<prefix>`` prepares a dataset, trains and registers a model, compresses
it, and serves it. Every artifact is written to the bucket and read back from it (the
operator reads the model's manifest there, the compress step its parent, the model server
downloads and verifies every file); nothing lands on the local disk's artifact root. With
the S3 server down for 30 s while the training runs, the step fails as transient (exit 3),
is retried, and finishes, nothing half-written."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import s3fs

from bertops.cluster.storage.run import Storage
from bertops.cluster.storage.tenants import Tenants
from bertops.operator.kube import Kube
from tests.operator.serving_helpers import deployment
from tests.operator.test_deployment_local import predict, serving_stable
from tests.operator.test_local_runtime import (
    dataset,
    reason,
    training,
    tweets_csv,  # noqa: F401  (module fixture)
)
from tests.s3 import needs_s3
from tests.waiting import condition_of as condition
from tests.waiting import wait_for

pytestmark = needs_s3

INT8: dict[str, Any] = {
    "apiVersion": "bertops.io/v1alpha1",
    "kind": "BertModel",
    "metadata": {"name": "tiny-v1-int8"},
    "spec": {
        "family": "tiny-int8",  # not the deployment's family: it keeps serving tiny-v1
        "compression": {
            "parentRef": {"name": "tiny-v1"},
            "steps": [{"method": "quantize", "granularity": "perChannel"}],
            "gate": {"maxAccuracyDrop": 0.2, "maxF1Drop": 0.2},
        },
    },
}


def _ready(kube_layer: Kube, namespace: str, name: str, timeout: float = 300) -> Any:
    return wait_for(
        lambda: (
            reason(kube_layer, "BertModel", namespace, name, "Ready") == "Verified"
            and kube_layer.get("BertModel", namespace, name)
        ),
        timeout=timeout,
        what=f"BertModel {name} Ready",
    )


def _logged(namespace: str) -> dict[str, Any]:
    """The test deployment with its prediction log on (a drift check on S3 runs in pods:
    tests/node/test_node_e2e.py)."""
    body = deployment(namespace)
    body["spec"]["serving"]["predictionLog"] = "hash"
    return body


def test_the_loop_runs_on_s3(
    kube_layer: Kube,
    namespace: str,
    start_operator: Any,
    tweets_csv: Path,  # noqa: F811
    s3_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BERTOPS_LOG_SHIP_SECONDS", "1")  # the servers inherit it
    prefix = f"bertops/{namespace}-store"
    operator = start_operator(namespace, artifact_root=f"s3://{prefix}")
    kube_layer.create(dataset(namespace, tweets_csv))
    kube_layer.create(training(namespace))
    kube_layer.create({**INT8, "metadata": {**INT8["metadata"], "namespace": namespace}})
    model = _ready(kube_layer, namespace, "tiny-v1")["status"]
    variant = _ready(kube_layer, namespace, "tiny-v1-int8")["status"]
    assert model["artifactUri"].startswith(f"s3://{prefix}/{namespace}/models/")
    assert variant["artifactUri"].startswith(f"s3://{prefix}/{namespace}/models/")
    assert variant["format"] == "onnx" and len(model["manifestSha256"]) == 64

    kube_layer.create(_logged(namespace))
    endpoint = serving_stable(kube_layer, namespace, "tiny-v1", timeout=120)["endpoint"]
    answer = wait_for(lambda: (r := predict(endpoint)).status_code == 200 and r, timeout=30)
    assert answer.json()["predictions"][0]["label"] in ("negative", "neutral", "positive")
    texts = [f"flight {number} was late again" for number in range(60)]
    assert httpx.post(f"{endpoint}/predict", json={"texts": texts}, timeout=60).is_success

    # The server's prediction log (spooled locally) is shipped to the bucket: all rows.
    store = s3fs.S3FileSystem(skip_instance_cache=True)
    logs = f"{prefix}/{namespace}/deployments/web/predictions"

    def shipped_rows() -> int:
        store.invalidate_cache()
        found = store.find(logs) if store.exists(logs) else []
        return sum(store.cat_file(path).count(b"\n") for path in found)

    wait_for(lambda: shipped_rows() == 61, timeout=60, what="61 prediction rows in the bucket")
    written = store.find(f"{prefix}/{namespace}")
    for folder in (
        "datasets/tweets/g1",
        "models/tiny/g1",
        "models/tiny-v1-int8",
        "deployments/web/predictions",
    ):
        assert any(f"/{namespace}/{folder}" in path for path in written), folder
    assert not any(".tmp-" in path for path in written)  # every publication completed
    assert not (tmp_path / "artifacts").exists()  # the local root was never used
    assert operator.thread.is_alive()


def test_the_store_down_for_30s_during_training_is_retried(
    kube_layer: Kube,
    namespace: str,
    start_operator: Any,
    tweets_csv: Path,  # noqa: F811
    s3_store: Storage,
    s3_env: dict[str, str],
) -> None:
    prefix = f"bertops/{namespace}-store"
    start_operator(namespace, artifact_root=f"s3://{prefix}", step_retry_base_seconds=5)
    kube_layer.create(dataset(namespace, tweets_csv))
    wait_for(
        lambda: reason(kube_layer, "BertDataset", namespace, "tweets", "Ready") == "Prepared",
        timeout=120,
        what="dataset prepared",
    )
    kube_layer.create(training(namespace))
    wait_for(
        lambda: (
            (kube_layer.get("BertTraining", namespace, "tiny") or {}).get("status", {}).get("step")
        ),
        timeout=60,
        what="the training step started",
    )
    s3_store.down()
    time.sleep(30)
    s3_store.up()
    model = _ready(kube_layer, namespace, "tiny-v1")
    training_status = kube_layer.get("BertTraining", namespace, "tiny")
    assert training_status is not None
    assert training_status["status"]["attempts"] >= 2  # the outage failed an attempt
    retried = [
        e["message"]
        for e in kube_layer.events_for(namespace, "tiny")
        if e.get("reason") == "Retrying"
    ]
    # Failed as transient (exit code 3, "retry may help"), not as bad input or a bug.
    assert retried and "exit code 3: EndpointConnectionError" in retried[0], retried
    store = s3fs.S3FileSystem(skip_instance_cache=True)
    written = store.find(f"{prefix}/{namespace}/models")
    assert not any(".tmp-" in path for path in written)
    assert model["status"]["manifestSha256"]


def test_a_missing_bucket_fails_the_step_with_a_condition_naming_it(
    kube_layer: Kube,
    namespace: str,
    start_operator: Any,
    tweets_csv: Path,  # noqa: F811
    s3_env: dict[str, str],
) -> None:
    start_operator(namespace, artifact_root="s3://no-such-bucket/store")
    kube_layer.create(dataset(namespace, tweets_csv))
    ready = _settled(kube_layer, namespace)
    assert ready["status"] == "False"
    assert ready["reason"] == "InvalidData"  # exit code 2: no retry can help
    assert "cannot publish to s3://no-such-bucket/store/" in ready["message"]
    assert "The specified bucket does not exist" in ready["message"]
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in ready["message"]


def _settled(kube_layer: Kube, namespace: str) -> dict[str, Any]:
    """The dataset's Ready condition once its step has ended."""

    def settled() -> dict[str, Any] | None:
        found = condition(kube_layer.get("BertDataset", namespace, "tweets"), "Ready")
        return found if found and found["reason"] not in ("Preparing", "Pending") else None

    found: dict[str, Any] = wait_for(settled, timeout=120, what="the dataset's Ready condition")
    return found


def test_a_denied_prefix_fails_the_step_with_a_condition_naming_it(
    kube_layer: Kube,
    namespace: str,
    start_operator: Any,
    tweets_csv: Path,  # noqa: F811
    s3_store: Storage,
    s3_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The key of another namespace (storage.tenants): the store refuses this one's prefix.
    prefix = f"{namespace}-store"
    other = Tenants(s3_store).client_env("someone-else", prefix)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, other[key])
    start_operator(namespace, artifact_root=f"s3://bertops/{prefix}")
    kube_layer.create(dataset(namespace, tweets_csv))
    ready = _settled(kube_layer, namespace)
    assert ready["status"] == "False"
    assert ready["reason"] == "InvalidData", ready  # exit code 2: no retry can help
    target = f"cannot publish to s3://bertops/{prefix}/{namespace}/datasets/tweets/"
    assert target in ready["message"] and "Access Denied" in ready["message"], ready
    assert other["AWS_SECRET_ACCESS_KEY"] not in ready["message"]
