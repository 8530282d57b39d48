"""The demo's last stage: the example BertDeployment serves the trained model.

Called by :func:`bertops.cluster.demo.run` once the models are Ready. Waits until the
operator reports the BertDeployment Ready with a stable model and a gateway endpoint,
sends a few real requests through that gateway (``/predict`` and one Open Inference
Protocol v2 ``infer``), prints the answers, ``bertops rollout status`` and
``kubectl get bertdeployment``. Every wait is bounded, and a timeout says what was
missing (no status at all means the operator did not reconcile the object).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bertops.cluster.controlplane import Cluster
from bertops.cluster.demo_traffic import Gateway

NAME = "sentiment"
EXAMPLES = (
    "What a fantastic day, the new release works perfectly!",
    "The train is late again and nobody tells us anything.",
    "The meeting has been moved to Thursday at 10.",
    "I can't believe how bad the support was, never again.",
)
Kubectl = Callable[..., str]


def feedback_secret(kubectl: Kubectl, deployment: dict[str, Any]) -> str | None:
    """Make the Secret the example deployment names for its feedback clients (one
    labeler with a fresh token), as a user would with kubectl; the labeler's token, or
    None when the deployment names no Secret."""
    name = deployment["spec"].get("serving", {}).get("feedback", {}).get("credentialsSecret")
    if not name:
        return None
    token = secrets.token_urlsafe(24)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"labeler": token},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(secret))
    return token


def _ready(body: dict[str, Any]) -> dict[str, Any] | None:
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), None)


def wait_serving(kubectl: Kubectl, timeout: float) -> tuple[dict[str, Any] | None, str]:
    """The BertDeployment once Ready with STABLE and an endpoint, else None and why."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while True:
        text = kubectl("get", "bertdeployment", NAME, "-o", "json", "--ignore-not-found")
        body = json.loads(text) if text.strip() else {}
        status = body.get("status") or {}
        ready = _ready(body)
        serving = ready is not None and ready.get("status") == "True"
        if serving and status.get("stableModel") and status.get("endpoint"):
            return body, ""
        if time.monotonic() >= deadline:
            break
        time.sleep(2)
    if not body:
        return None, f"BertDeployment {NAME} does not exist (was deployment.yaml applied?)"
    if not body.get("status"):
        return None, (
            f"the operator wrote no status on BertDeployment {NAME} in {timeout:.0f}s: "
            "it does not reconcile BertDeployments, or it failed (see the operator log)"
        )
    if ready is None or ready.get("status") != "True":
        why = f"{ready.get('reason')}: {ready.get('message')}" if ready else "no Ready condition"
        return None, f"BertDeployment {NAME} is not Ready after {timeout:.0f}s ({why})"
    return None, f"BertDeployment {NAME} is Ready but has no status.endpoint after {timeout:.0f}s"


def ask(endpoint: str, stable: str, say: Callable[[str], None]) -> int:
    """A few requests through the gateway; the number that failed."""
    failed = 0
    with httpx.Client(base_url=endpoint, timeout=30) as client:
        for index, text in enumerate(EXAMPLES):
            # A different sticky key per request, as different users would send.
            response = client.post(
                "/predict", json={"texts": [text]}, headers={"x-bertops-key": f"demo-{index}"}
            )
            if response.status_code != 200:
                failed += 1
                say(f"  POST /predict -> {response.status_code} {response.text[:200]}")
                continue
            answer = response.json()
            best = answer["predictions"][0]
            say(
                f"  {best['label']:>8} {best['score']:.2f}  ({answer.get('model')}) "
                f"POST /predict {text!r}"
            )
        oip = {
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [EXAMPLES[0]]}]
        }
        response = client.post(f"/v2/models/{stable}/infer", json=oip)
        if response.status_code == 200:
            outputs = {o["name"]: o["data"] for o in response.json().get("outputs", [])}
            say(f"  OIP v2 POST /v2/models/{stable}/infer -> label {outputs.get('label')}")
        else:
            failed += 1
            say(f"  OIP v2 POST /v2/models/{stable}/infer -> {response.status_code}")
    return failed


def rollout_status(cluster: Cluster, namespace: str = "default") -> str:
    """``bertops rollout status`` as a user would run it (a process: the demo does not
    import the CLI). Its exit code is 2 while a canary (the compressed model) rolls out."""
    result = subprocess.run(
        [sys.executable, "-m", "bertops.cli.main", "rollout", "status", NAME, "-n", namespace],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=dict(os.environ, KUBECONFIG=str(cluster.kubeconfig), COLUMNS="110"),
    )
    return f"{result.stdout}{result.stderr}(exit code {result.returncode})"


def run_stage(
    cluster: Cluster,
    kubectl: Kubectl,
    say: Callable[[str], None],
    operator_log: Path | str,
    timeout: float = 300,
    gateway_of: Callable[[dict[str, Any]], Gateway] | None = None,
    namespace: str = "default",
) -> int:
    """Stage 6 of the demo; 0 when the deployment served every request. ``gateway_of``
    turns the deployment's status into where requests go (the node demo: the gateway
    Service's address inside the node's namespace); by default status.endpoint."""
    started = time.monotonic()
    say(f"6/9 deploying: waiting for BertDeployment {NAME} to serve (Ready, STABLE, endpoint)")
    body, why = wait_serving(kubectl, timeout)
    if body is None:
        say(f"deploy stage timed out: {why}. Operator log: {operator_log}")
        print("\n$ kubectl get bertdeployment\n" + kubectl("get", "bertdeployment"))
        return 1
    status = body["status"]
    serving = time.monotonic() - started
    say(f"serving {status['stableModel']} at {status['endpoint']} after {serving:.0f}s")
    gateway = gateway_of(body) if gateway_of else Gateway(status["endpoint"])
    try:
        failed = gateway.run(lambda: ask(gateway.endpoint, status["stableModel"], say))
    except httpx.HTTPError as error:
        say(f"the gateway at {status['endpoint']} did not answer: {error}")
        failed = len(EXAMPLES) + 1
    print(f"\n$ bertops rollout status {NAME}\n{rollout_status(cluster, namespace)}")
    print("\n$ kubectl get bertdeployment\n" + kubectl("get", "bertdeployment"))
    say(f"the deploy stage took {time.monotonic() - started:.0f}s")
    return 1 if failed else 0
