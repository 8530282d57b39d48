"""The management API on loopback against the real API server: without a token nothing
is readable or changeable (401), read-only mode refuses every change (403), a cookie
session needs the confirmation header to change anything, a served model is refused with
the deployment's name (409), rollout actions become the operator's annotation, the
pass-through mode hands the caller's token to Kubernetes, and Schemathesis finds no 5xx
in the OpenAPI-described endpoints."""

from __future__ import annotations

import hashlib
import io
import tarfile
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok

from bertops.api.artifacts import MODEL_MANIFEST
from tests.ui.conftest import TOKEN, LiveUI, World

pytestmark = pytest.mark.integration
BEARER = {"Authorization": f"Bearer {TOKEN}"}
SCHEMATHESIS_EXAMPLES = 20  # per operation and method: 13 operations, about 260 calls


def _annotation(world: World, name: str) -> str | None:
    body = world.objects.get("BertDeployment", name) or {}
    return (body["metadata"].get("annotations") or {}).get("bertops.io/rollout-action")


def test_without_a_token_nothing_is_read_or_changed(world: World, serve_ui: Any) -> None:
    ui: LiveUI = serve_ui(allow_writes=True)
    with httpx.Client(base_url=ui.url) as http:
        assert http.get("/api/models").status_code == 401
        assert http.delete("/api/models/broken").status_code == 401
        assert http.post("/api/deployments/sentiment/actions/abort").status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert http.delete("/api/models/broken", headers=wrong).status_code == 401
        assert http.get("/api/models/run-1/download", headers=wrong).status_code == 401
        assert http.get("/").status_code == 303  # pages send people to the login form
        assert http.get("/openapi.json").status_code == 200  # the spec itself is public
    assert world.objects.get("BertModel", "broken") is not None
    assert _annotation(world, "sentiment") is None


def test_read_only_mode_refuses_every_change(world: World, serve_ui: Any) -> None:
    ui: LiveUI = serve_ui(allow_writes=False)
    with httpx.Client(base_url=ui.url, headers=BEARER) as http:
        assert http.get("/api/models").status_code == 200
        deleted = http.delete("/api/models/broken")
        assert deleted.status_code == 403 and "read-only" in deleted.json()["error"]
        assert http.post("/api/deployments/sentiment/actions/promote").status_code == 403
        assert http.get("/api/session").json()["writes"] is False
    assert world.objects.get("BertModel", "broken") is not None
    assert _annotation(world, "sentiment") is None


def test_writes_need_confirmation_and_spare_served_models(world: World, serve_ui: Any) -> None:
    ui: LiveUI = serve_ui(allow_writes=True)
    with httpx.Client(base_url=ui.url) as http:
        login = http.post("/login", data={"token": TOKEN})
        assert login.status_code == 303 and "bertops_token" in http.cookies
        # A cookie alone (what a cross-site form would carry) cannot change anything.
        assert http.delete("/api/models/broken").status_code == 403
        confirm = {"X-Bertops-Confirm": "yes"}
        refused = http.delete("/api/models/run-1", headers=confirm)
        assert refused.status_code == 409
        assert refused.json()["deployments"] == ["sentiment"]
        assert "served by BertDeployment sentiment" in refused.json()["error"]
        assert http.delete("/api/models/broken", headers=confirm).status_code == 200
        action = http.post("/api/deployments/sentiment/actions/abort", headers=confirm)
        assert action.status_code == 200
        assert (
            http.post("/api/deployments/sentiment/actions/bogus", headers=confirm).status_code
            == 422
        )
    assert world.objects.get("BertModel", "broken") is None
    assert world.objects.get("BertModel", "run-1") is not None
    assert _annotation(world, "sentiment") == action.json()["annotation"]
    assert action.json()["annotation"].startswith("abort/")


def test_download_is_the_verified_artifact(world: World, serve_ui: Any) -> None:
    ui: LiveUI = serve_ui()
    with httpx.Client(base_url=ui.url, headers=BEARER) as http:
        response = http.get("/api/models/run-1/download")
    assert response.status_code == 200, response.text
    assert hashlib.sha256(response.content).hexdigest() == response.headers["x-bertops-sha256"]
    assert response.headers["x-bertops-manifest-sha256"] == world.manifest_sha256
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        manifest = tar.extractfile(f"run-1/{MODEL_MANIFEST}")
        assert manifest is not None
        assert hashlib.sha256(manifest.read()).hexdigest() == world.manifest_sha256


def test_pass_through_uses_the_callers_kubernetes_token(
    world: World, serve_ui: Any, cluster: Any
) -> None:
    ui: LiveUI = serve_ui(pass_through=True)
    with httpx.Client(base_url=ui.url) as http:
        mine = {"Authorization": f"Bearer {cluster.token()}"}
        assert http.get("/api/models", headers=mine).status_code == 200
        stranger = {"Authorization": "Bearer who-knows"}
        assert http.get("/api/models", headers=stranger).status_code == 401  # said by Kubernetes
        assert http.post("/login", data={"token": "who-knows"}).status_code == 401


@pytest.mark.slow
def test_openapi_operations_never_answer_5xx(world: World, serve_ui: Any) -> None:
    """Every operation of /openapi.json, SCHEMATHESIS_EXAMPLES generated cases each (with
    the token and writes enabled, so the changing operations run too): no 5xx, and each
    answer matches what the spec says (status code, content type, schema)."""
    ui: LiveUI = serve_ui(allow_writes=True)
    api = schemathesis.openapi.from_url(f"{ui.url}/openapi.json")
    operations = []
    for result in api.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operations.append(result.ok())
    assert len(operations) == 13
    calls = 0

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=SCHEMATHESIS_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: Any) -> None:
            nonlocal calls
            response = case.call(headers=BEARER)
            calls += 1
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)
            case.validate_response(response)

        exercise()
    print(f"schemathesis: {calls} calls over {len(operations)} operations")


def test_bertops_ui_command_serves_the_api(world: World, cluster: Any, namespace: str) -> None:
    """The real `bertops ui` process: token from the environment, read-only by default."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.ui.conftest import free_port

    port = free_port()
    command = [
        str(Path(sys.executable).parent / "bertops"),
        "ui",
        "--port",
        str(port),
        "--kubeconfig",
        str(cluster.kubeconfig),
        "-n",
        namespace,
    ]
    env = {**os.environ, "BERTOPS_UI_TOKEN": TOKEN}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/models", headers=BEARER)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert answer.status_code == 200
        assert [r["name"] for r in answer.json()["items"]] == ["broken", "run-1", "run-1-int8"]
        gone = httpx.delete(f"http://127.0.0.1:{port}/api/models/broken", headers=BEARER)
        assert gone.status_code == 403
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert "read-only" in stderr
