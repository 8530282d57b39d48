"""Fixtures of the management-service tests: bertops objects in several states on the
real API server (statuses patched directly, as the operator would write them), a real
model artifact folder with its manifest, and ``bertops ui`` served by uvicorn on
loopback in a thread.

Used by tests/ui/test_cli.py, test_api.py and test_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bertops.api.artifacts import MODEL_MANIFEST
from bertops.api.kinds import GROUP, VERSION, kind_info
from tests.integration import manifests as m
from tests.server.artifacts import LABELS, write_manifest

TOKEN = "test-token-" + "x" * 16
NOW = "2026-11-28T12:00:00Z"


def condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": NOW,
    }


def write_artifact(folder: Path, name: str, epochs: int = 3) -> str:
    """A small model artifact as the trainer lays it out (weights, tokenizer, labels,
    metrics.json with the per-epoch history and the confusion matrix, manifest last);
    returns the sha256 of the manifest's bytes."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    save_file(
        {"classifier.weight": rng.standard_normal((3, 32)).astype("float32")},
        str(folder / "model.safetensors"),
    )
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {}}))
    (folder / "labels.json").write_text(json.dumps({"labels": LABELS}))
    history = [
        {
            "epoch": e,
            "trainLoss": 1.1 / e,
            "samplesPerSecond": 50.0,
            "validation": {
                "loss": 1.0 / e + 0.1,
                "accuracy": 0.5 + 0.1 * e,
                "macroF1": 0.45 + 0.1 * e,
            },
        }
        for e in range(1, epochs + 1)
    ]
    test = {
        "accuracy": 0.8,
        "macroF1": 0.78,
        "loss": 0.5,
        "confusionMatrix": [[30, 3, 2], [4, 25, 6], [1, 5, 34]],
    }
    (folder / "metrics.json").write_text(json.dumps({"history": history, "test": test}))
    write_manifest(folder, name)
    return hashlib.sha256((folder / MODEL_MANIFEST).read_bytes()).hexdigest()


@dataclass
class Objects:
    """Creates bertops objects in one namespace and writes their status."""

    api: Any
    namespace: str

    def create(self, body: dict[str, Any], status: dict[str, Any] | None = None) -> None:
        plural = kind_info(body["kind"]).plural
        body = m.with_path(body, "metadata.namespace", self.namespace)
        self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, body)
        if status is not None:
            self.status(body["kind"], body["metadata"]["name"], status)

    def status(self, kind: str, name: str, status: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, kind_info(kind).plural, name, {"status": status}
        )

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, kind_info(kind).plural, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise


@dataclass
class World:
    objects: Objects
    artifact: Path
    manifest_sha256: str


def model_status(
    artifact: Path, sha: str, *, accuracy: float, size: int, parent: str | None, p50: float
) -> dict[str, Any]:
    lineage: dict[str, Any] = {
        "dataset": "tweets",
        "datasetChecksum": "ab" * 32,
        "trainingRun": "run-1-train-g1-a1",
        "baseModel": "MiniLM-L6",
    }
    if parent:
        lineage.update(parentModel=parent, recipe=["quantize:perChannel"])
    return {
        "artifactUri": str(artifact),
        "manifestSha256": sha,
        "format": "safetensors",
        "labels": LABELS,
        "metrics": {"accuracy": accuracy, "macroF1": accuracy - 0.02, "loss": 0.5},
        "size": {"parameters": size // 4, "bytesOnDisk": size, "display": f"{size / 1e6:.1f}MB"},
        "latency": {"p50Batch1Ms": p50, "p95Batch1Ms": p50 * 1.4},
        "lineage": lineage,
        "conditions": [condition("Ready", "True", "Verified", "checksums match")],
    }


def populate(objects: Objects, root: Path) -> World:
    """Two ready models (a trained one and its INT8 variant, both served by deployment
    ``sentiment``), a third that failed verification and nobody serves, a finished and a
    running training, a prepared dataset."""
    artifact = root / "artifacts" / "run-1"
    sha = write_artifact(artifact, "run-1")
    objects.create(
        m.dataset(),
        {
            "checksum": "ab" * 32,
            "shortChecksum": "abababababab",
            "labels": LABELS,
            "rows": {"train": 720, "validation": 90, "test": 90, "total": 900},
            "conditions": [condition("Ready", "True", "Prepared")],
        },
    )
    objects.create(
        m.training("run-1"),
        {
            "step": "run-1-train-g1-a1",
            "modelName": "run-1",
            "progress": {
                "epoch": 2,
                "totalEpochs": 2,
                "step": 90,
                "totalSteps": 90,
                "display": "2/2",
            },
            "testMetrics": {"accuracy": 0.8},
            "conditions": [condition("Succeeded", "True", "Completed")],
        },
    )
    objects.create(
        m.training("run-2"),
        {
            "step": "run-2-train-g1-a1",
            "progress": {"epoch": 1, "totalEpochs": 2, "step": 30, "totalSteps": 90, "loss": 0.9},
            "conditions": [condition("Succeeded", "Unknown", "Training")],
        },
    )
    objects.create(
        _trained_model(),
        model_status(artifact, sha, accuracy=0.8, size=92_000_000, parent=None, p50=38.0),
    )
    objects.create(
        m.model("run-1-int8"),
        model_status(artifact, sha, accuracy=0.79, size=23_000_000, parent="run-1", p50=12.5),
    )
    objects.create(
        m.model(
            "broken",
            family="other",
            compression={"parentRef": {"name": "run-1"}, "steps": [{"method": "onnxExport"}]},
        ),
        {"conditions": [condition("Ready", "False", "VerificationFailed", "sha256 mismatch")]},
    )
    objects.create(
        m.deployment(),
        {
            "stableModel": "run-1",
            "canaryModel": "run-1-int8",
            "canaryWeight": 10,
            "rolloutStep": 0,
            "drift": {
                "score": 0.12,
                "drifted": False,
                "lastCheck": NOW,
                "reportUri": "https://reports.example/sentiment/1.html",
                "windowRows": 1000,
            },
            "history": [{"model": "run-0", "outcome": "Promoted", "at": NOW}],
            "conditions": [
                condition("Ready", "True", "Serving"),
                condition("Progressing", "True", "CanaryInProgress", "step 1 of 2"),
            ],
        },
    )
    return World(objects, artifact, sha)


def _trained_model() -> dict[str, Any]:
    body = m.model("run-1")
    body["spec"] = {"family": "sentiment", "trainingRef": {"name": "run-1"}}
    return body


@pytest.fixture
def world(kube: Any, namespace: str, tmp_path: Path) -> World:
    from kubernetes import client

    return populate(Objects(client.CustomObjectsApi(kube), namespace), tmp_path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LiveUI:
    url: str
    token: str


@pytest.fixture
def serve_ui(cluster: Any, namespace: str) -> Iterator[Any]:
    """``serve_ui(allow_writes=..., pass_through=...)`` starts the app on loopback."""
    import uvicorn

    from bertops.ui.app import create_app
    from bertops.ui.catalog import Catalog
    from bertops.ui.service import Settings

    servers: list[tuple[uvicorn.Server, threading.Thread, Catalog]] = []

    def start(allow_writes: bool = False, pass_through: bool = False) -> LiveUI:
        catalog = Catalog.connect(str(cluster.kubeconfig), namespace)
        settings = Settings(
            namespace=namespace,
            token=None if pass_through else TOKEN,
            pass_through=pass_through,
            allow_writes=allow_writes,
        )
        port = free_port()
        config = uvicorn.Config(
            create_app(settings, catalog),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            ws="none",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "bertops ui did not start"
            time.sleep(0.05)
        servers.append((server, thread, catalog))
        return LiveUI(f"http://127.0.0.1:{port}", TOKEN)

    yield start
    for server, thread, catalog in servers:
        server.should_exit = True
        thread.join(timeout=10)
        catalog.api_client.close()
