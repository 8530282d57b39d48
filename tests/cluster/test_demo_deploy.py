"""The demo's deploy stage (bertops.cluster.demo_deploy) without the whole demo: it waits
for the BertDeployment to serve, says what was missing when it does not, and sends its
requests through the endpoint in status (here a stand-in gateway on loopback)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bertops.cluster import demo_deploy


def fake_kubectl(body: dict[str, Any] | None) -> demo_deploy.Kubectl:
    def kubectl(*args: str) -> str:
        if "-o" in args:
            return json.dumps(body) if body is not None else ""
        return "NAME        STABLE   READY\nsentiment   m1       True\n"

    return kubectl


def ready(status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": reason, "message": message}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, "does not exist"),
        ({"metadata": {}}, "wrote no status"),
        (
            {"status": {"conditions": [ready("False", "NoModelSelected", "none meets 0.6")]}},
            "NoModelSelected: none meets 0.6",
        ),
        (
            {"status": {"stableModel": "m1", "conditions": [ready("True", "Serving")]}},
            "no status.endpoint",
        ),
    ],
)
def test_a_deployment_that_does_not_serve_is_explained(
    body: dict[str, Any] | None, expected: str
) -> None:
    found, why = demo_deploy.wait_serving(fake_kubectl(body), timeout=0)
    assert found is None and expected in why


@pytest.fixture
def gateway() -> Iterator[tuple[str, list[str]]]:
    """A stand-in gateway answering /predict and OIP infer like the real server does."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            paths.append(self.path)
            if self.path == "/predict":
                answer: dict[str, Any] = {
                    "model": "m1",
                    "predictions": [{"label": "positive", "score": 0.9}],
                }
            else:
                answer = {"outputs": [{"name": "label", "data": ["positive"]}]}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", paths
    server.shutdown()
    server.server_close()
    thread.join()


def test_the_stage_sends_requests_through_the_endpoint(
    gateway: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    endpoint, paths = gateway
    body = {
        "status": {
            "stableModel": "m1",
            "endpoint": endpoint,
            "conditions": [ready("True", "Serving")],
        }
    }
    monkeypatch.setattr(demo_deploy, "rollout_status", lambda cluster, namespace: "(exit code 0)")
    said: list[str] = []
    code = demo_deploy.run_stage(
        None,  # type: ignore[arg-type]  # only rollout_status (replaced) uses the cluster
        fake_kubectl(body),
        said.append,
        tmp_path / "operator.log",
        timeout=1,
    )
    assert code == 0, said
    assert paths.count("/predict") == len(demo_deploy.EXAMPLES)
    assert "/v2/models/m1/infer" in paths
    assert any("positive 0.90" in line for line in said)
