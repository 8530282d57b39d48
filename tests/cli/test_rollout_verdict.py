"""``bertops rollout status`` without a cluster: the verdict (phase and exit code) of
each rollout state, table-driven; the rendering of gates, counts and history; counts read
from a real gateway metrics exposition over HTTP; and exit 4 when the API server cannot
be reached."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from rich.console import Console
from typer.testing import CliRunner

from bertops.cli import rollout_view as view
from bertops.cli.rollout import rollout_app
from bertops.cli.rollout_client import counts_or_reason, in_cluster_service, new_value
from bertops.operator.rollout.actions import parse_action
from bertops.server.gateway.metrics import GatewayMetrics
from tests.cli.rollout_states import STATES
from tests.cli.test_extras_gate import bertops_without


def body(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    document: dict[str, Any] = {
        "metadata": {"name": "sentiment", "namespace": "ns", "generation": generation},
        "spec": {"rollout": {"steps": [{"weight": 10}, {"weight": 50}]}},
    }
    if status is not None:
        document["status"] = status
    return document


@pytest.mark.parametrize("state", sorted(STATES))
def test_verdict_of_each_state(state: str) -> None:
    status, phase, code = STATES[state]
    result = view.verdict(body(status))
    assert (result.phase, result.code) == (phase, code), result.message


def test_not_found_and_a_generation_not_yet_reconciled() -> None:
    assert view.verdict(None).code == view.NOT_FOUND
    healthy = STATES["healthy"][0]
    assert view.verdict(body(healthy, generation=2)).phase == "Pending"


def test_spec_pause_counts_as_paused() -> None:
    status = STATES["progressing"][0]
    document = body(status)
    document["spec"]["rollout"]["paused"] = True
    assert view.verdict(document).phase == "Paused"


@pytest.mark.parametrize(
    ("phase", "final"),
    [("Healthy", True), ("RolledBack", True), ("Paused", True), ("Progressing", False)],
)
def test_waiting_ends_on_final_phases(phase: str, final: bool) -> None:
    state = {"Healthy": "healthy", "RolledBack": "rolled-back", "Paused": "paused"}
    status = STATES[state.get(phase, "progressing")][0]
    assert view.verdict(body(status)).final is final


def test_nonces_are_fresh_and_parse_as_actions() -> None:
    first, second = new_value("promote"), new_value("promote")
    assert first != second
    parsed = parse_action(first)
    assert parsed is not None and parsed.action == "promote" and parsed.error is None


def _text(renderable: Any) -> str:
    out = io.StringIO()
    Console(width=200, file=out, color_system=None).print(renderable)
    return out.getvalue()


def test_render_shows_weight_step_gates_and_history() -> None:
    document = body(STATES["progressing"][0])
    text = _text(view.render(document, view.verdict(document)))
    expected = ("sentiment-v2", "10%", "1/2", "errorRate", "NotYetSure", "1 passed", "look 3")
    for found in (*expected, "1 not yet sure", "[-0.063, 0.147] at 99.9%", "70 (+40)"):
        assert found in text, found
    rolled = body(STATES["rolled-back"][0])
    text = _text(view.render(rolled, view.verdict(rolled)))
    assert "1 RolledBack" in text and "ErrorRateGateFailed" in text


@pytest.fixture
def gateway_metrics() -> Iterator[str]:
    """A stand-in gateway whose /metrics is the real gateway metrics' exposition."""
    metrics = GatewayMetrics()
    for variant, model, count, failed in (("stable", "v1", 90, 1), ("canary", "v2", 10, 0)):
        metrics.requests.labels(variant, model, "200", "inference").inc(count)
        metrics.errors.labels(variant, model, "status", "inference").inc(failed)
        metrics.latency.labels(variant, model, "inference").observe(0.02)
    exposition = generate_latest(metrics.registry)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/metrics" else 404)
            self.end_headers()
            self.wfile.write(exposition)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_counts_come_from_the_gateway_metrics(gateway_metrics: str) -> None:
    status = {"endpoint": gateway_metrics, "stableModel": "v1", "canaryModel": "v2"}
    observations, error = counts_or_reason({"status": status})
    assert error is None and observations is not None
    assert observations.stable is not None and observations.stable.requests == 90
    assert observations.canary is not None and observations.canary.requests == 10
    assert observations.stable.errors == 1
    text = _text(view.counts_table(observations, None))
    assert "90" in text and "canary" in text


def test_counts_unreachable_is_said_not_raised() -> None:
    observations, error = counts_or_reason({"status": {"endpoint": "http://127.0.0.1:9"}})
    assert observations is None and error is not None and "unavailable" in error


def test_unreachable_api_server_exits_4(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u, namespace: team}}]\n"
    )
    for args in (["status", "x"], ["promote", "x"]):
        result = CliRunner().invoke(rollout_app, [*args, "--kubeconfig", str(kubeconfig)])
        assert result.exit_code == view.UNREACHABLE, result.output
        assert "cannot reach the API server" in result.output


def test_without_the_kubernetes_client_rollout_gives_the_install_hint() -> None:
    result = bertops_without("kubernetes", "rollout", "status", "sentiment")
    assert result.returncode == 2, result.stderr
    assert "pip install 'bertops[operator]'" in result.stderr


@pytest.mark.parametrize(
    ("endpoint", "service"),
    [
        ("http://web-gateway.ml.svc:8000", ("ml", "web-gateway", 8000)),
        ("http://web-gateway.ml.svc.cluster.local:8000/", ("ml", "web-gateway", 8000)),
        ("http://web-gateway.ml.svc", ("ml", "web-gateway", 80)),
        ("http://127.0.0.1:8000", None),
        ("http://web-gateway.ml.example.com:8000", None),
        ("http://web-gateway:8000", None),
    ],
)
def test_in_cluster_service_names_are_read_through_the_api_servers_proxy(
    endpoint: str, service: tuple[str, str, int] | None
) -> None:
    assert in_cluster_service(endpoint) == service
