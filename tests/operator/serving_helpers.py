"""Helpers for the BertDeployment integration tests: tiny model artifacts with a known
behaviour (a constant label, or an error on every real request), BertModel and
BertDeployment bodies, the Secret of feedback clients, and a steady client that counts
what it got.

Used by tests/operator/test_deployment_local.py.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.server.artifacts import LABELS, tiny_model, tokenizer_source, write_manifest

FEEDBACK_SECRET = "labelers"  # a deployment's serving.feedback.credentialsSecret

TEXTS = [
    "the service was quick and the staff were friendly and helpful all evening long",
    "i waited an hour for a cold meal and nobody even said sorry to us at all",
    "an ordinary day at the office with meetings and a sandwich for lunch again",
]


def feedback_credentials(kube: Any, namespace: str, client: str = "labeler") -> dict[str, str]:
    """Create the Secret of feedback clients (one client, a fresh token) as a user would,
    and return the header that client sends with its feedback."""
    token = secrets.token_urlsafe(24)
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": FEEDBACK_SECRET, "namespace": namespace},
            "data": {client: base64.b64encode(token.encode()).decode()},
        }
    )
    return {"authorization": f"Bearer {token}"}


def constant_artifact(folder: Path, name: str, label: str) -> Path:
    """A tiny BERT that answers ``label`` for every text (its classifier is all bias)."""
    import torch
    from transformers import AutoTokenizer

    model = tiny_model(0)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([8.0 if x == label else 0.0 for x in LABELS]))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_source()).save_pretrained(folder)
    write_manifest(folder, name)
    return folder


def erroring_artifact(folder: Path, name: str) -> Path:
    """A tiny BERT with 8 positions: it verifies, loads and warms up (the warm-up text is
    7 tokens), then fails with a 500 on any text longer than that, like a broken build."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    settings: dict[str, Any] = {
        "vocab_size": 30522,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 8,
        "num_labels": len(LABELS),
        "id2label": dict(enumerate(LABELS)),
        "label2id": {label: i for i, label in enumerate(LABELS)},
    }
    config = BertConfig(**settings)
    folder.mkdir(parents=True, exist_ok=True)
    BertForSequenceClassification(config).eval().save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_source()).save_pretrained(folder)
    write_manifest(folder, name)
    return folder


def copy_artifact(source: Path, folder: Path, name: str) -> Path:
    """The same weights under another version name (identical predictions)."""
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("bertops-model.json"))
    write_manifest(folder, name)
    return folder


def model(namespace: str, name: str, artifact: Path, family: str = "tiny") -> dict[str, Any]:
    return {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": "BertModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"family": family, "artifactUri": str(artifact)},
    }


def deployment(
    namespace: str,
    name: str = "web",
    steps: list[dict[str, int]] | None = None,
    min_requests: int = 10,
    family: str = "tiny",
    **analysis: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "bertops.io/v1alpha1",
        "kind": "BertDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"selector": {"family": family, "policy": "latest"}},
            "serving": {"predictionLog": "off", "maxBatchWaitMs": 2},
            "rollout": {
                "steps": steps
                if steps is not None
                else [{"weight": 30, "pauseSeconds": 2}, {"weight": 60, "pauseSeconds": 2}],
                # The latency-ratio bound is wide: on a loaded 2-core CI machine a freshly
                # started canary's p95 is often 1.5-2x a warm stable's, which would roll a
                # good model back. The latency gates are tested alone in test_rollout_gates.
                # Scoring a model offline before traffic has its own tests
                # (test_offline_challenge): these are about serving the rollout.
                "analysis": {
                    "intervalSeconds": 1,
                    "minRequests": min_requests,
                    "maxLatencyRatio": 20,
                    "offlineEvaluation": False,
                    **analysis,
                },
            },
            "drift": {"enabled": False},
        },
    }


class SteadyClient:
    """POST /predict to the gateway in a loop (loopback, or a Service address inside a
    node's network namespace when ``netns`` names it; bounded), each request with its own
    sticky key so both variants get their share; counts answers by status and by the
    model that gave them."""

    def __init__(
        self,
        endpoint: str,
        max_requests: int = 20000,
        pause: float = 0.01,
        netns: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.max_requests = max_requests
        self.pause = pause
        self.netns = netns
        self.statuses: Counter[int] = Counter()
        self.models: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-client", daemon=True)

    def start(self) -> SteadyClient:
        assert self.netns or self.endpoint.startswith("http://127.0.0.1:"), self.endpoint
        self._thread.start()
        return self

    def _run(self) -> None:
        if self.netns:
            from bertops.cluster.node.netns import move_this_thread

            move_this_thread(self.netns)
        with httpx.Client(timeout=30) as client:
            for i in range(self.max_requests):
                if self._stop.is_set():
                    return
                try:
                    answer = client.post(
                        self.endpoint + "/predict",
                        json={"texts": [TEXTS[i % len(TEXTS)]]},
                        headers={"x-bertops-key": uuid.uuid4().hex},
                    )
                    self.statuses[answer.status_code] += 1
                    if answer.status_code == 200:
                        self.models[answer.json().get("model", "")] += 1
                    else:
                        self.failures.append(f"{answer.status_code}: {answer.text[:200]}")
                except httpx.HTTPError as error:
                    self.statuses[0] += 1
                    self.failures.append(repr(error))
                self._stop.wait(self.pause)

    def stop(self) -> SteadyClient:
        self._stop.set()
        self._thread.join(60)
        return self

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return self.sent - self.statuses[200]


def serving_pids(state: Path, namespace: str, name: str) -> dict[str, str]:
    """Folder name -> the pid file's content (pid and start time) of each serving process."""
    home = state / "serving" / namespace / name
    found = {}
    for folder in sorted(home.iterdir()) if home.exists() else []:
        if (folder / "pid").exists():
            found[folder.name] = (folder / "pid").read_text().strip()
    return found
