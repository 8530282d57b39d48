"""A real Prometheus (Debian's binary, :mod:`bertops.cluster.monitoring`) scraping a real
model server, a gateway in front of it and the operator's metrics endpoint on loopback,
every second, with targets added through file_sd after it started: the rollout analysis
reads the same per-variant numbers from Prometheus' URL as from the gateway's /metrics.
Every process and server the test starts is stopped at the end."""

from __future__ import annotations

import json
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bertops.cluster.monitoring import Monitoring, write_targets
from bertops.cluster.processes import free_port
from bertops.operator.metrics import OperatorMetrics
from bertops.operator.rollout.metrics import ScrapeSource
from bertops.operator.rollout.prometheus import PrometheusSource
from tests.server.artifacts import write_tiny_artifact
from tests.server.conftest import LiveServer, wait_ready
from tests.server.helpers import fire

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="apt-get install prometheus"),
]


def _prometheus_pids(config: Path) -> list[int]:
    """Live processes running a Prometheus with this config (a leftover would show here)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if f"--config.file={config}" in argv:
            found.append(int(proc.name))
    return found


def _up(url: str) -> dict[str, float]:
    answer = httpx.get(url + "/api/v1/query", params={"query": "up"}).json()
    return {r["metric"]["job"]: float(r["value"][1]) for r in answer["data"]["result"]}


def test_prometheus_scrapes_and_the_analysis_reads_the_same_numbers(tmp_path: Path) -> None:
    from bertops.server.app import ServerSettings, create_app
    from bertops.server.gateway.app import Gateway
    from bertops.server.gateway.routes import Routes
    from bertops.server.model import ServedModel

    artifact = write_tiny_artifact(tmp_path / "tiny-v1")
    monitoring = Monitoring(tmp_path / "cluster" / "monitoring", scrape_seconds=1)
    servers: list[LiveServer] = []
    stop_operator_metrics: Callable[[], None] | None = None
    try:
        server = LiveServer(create_app(ServedModel(str(artifact), threads=1), ServerSettings()))
        servers.append(server.start())
        wait_ready(server.url)
        # Both variants on the one server, as two model versions: two series per metric.
        table = Routes.model_validate(
            {
                "stable": {"name": "tiny-v1", "url": server.url, "model": "tiny-v1"},
                "canary": {"name": "tiny-v2", "url": server.url, "model": "tiny-v2"},
                "canaryWeight": 50,
            }
        )
        both = Gateway(table)
        gateway = LiveServer(both.app)
        servers.append(gateway.start())
        gateway_metrics = LiveServer(both.metrics_app)  # its own listener, as deployed
        servers.append(gateway_metrics.start())
        operator_port = free_port()
        stop_operator_metrics = OperatorMetrics().serve(operator_port)

        url = monitoring.up()
        pid = json.loads((monitoring.directory / "state.json").read_text())["pid"]
        assert url.startswith("http://127.0.0.1:")
        assert stat.S_IMODE(monitoring.directory.stat().st_mode) == 0o700
        assert stat.S_IMODE(monitoring.config_file.stat().st_mode) == 0o600
        # Targets arrive after the start, through file_sd, as the operator's would.
        write_targets(monitoring.directory, "bertops-operator", [f"127.0.0.1:{operator_port}"])
        write_targets(
            monitoring.directory, "bertops-gateway", [gateway_metrics.url.removeprefix("http://")]
        )
        targets = write_targets(monitoring.directory, "bertops-server", [server.url[7:]])
        assert stat.S_IMODE(targets.stat().st_mode) == 0o600

        requests = [
            {
                "path": "/predict",
                "json": {"texts": [f"text {i}"]},
                "headers": {"x-bertops-key": f"k{i}"},
            }
            for i in range(40)
        ]
        assert {answer.status for answer in fire(gateway.url, requests, concurrency=4)} == {200}

        direct = ScrapeSource((gateway_metrics.url + "/metrics",)).read()
        assert {key for key in direct} >= {("stable", "tiny-v1"), ("canary", "tiny-v2")}
        assert sum(o.requests for o in direct.values()) == 40
        source = PrometheusSource(url, {"job": "bertops-gateway"})
        deadline = time.monotonic() + 30
        while (from_prometheus := source.read()) != direct and time.monotonic() < deadline:
            time.sleep(0.5)
        assert from_prometheus == direct
        while _up(url) != dict.fromkeys(
            ("bertops-operator", "bertops-gateway", "bertops-server"), 1.0
        ):
            assert time.monotonic() < deadline, _up(url)
            time.sleep(0.5)
    finally:
        monitoring.down()
        if stop_operator_metrics is not None:
            stop_operator_metrics()
        for live in reversed(servers):
            live.stop()
    assert monitoring.url is None and not monitoring.down()
    assert _prometheus_pids(monitoring.config_file) == []
    assert not Path(f"/proc/{pid}").exists()  # exited and reaped: not even a zombie


def test_cli_monitoring_up_and_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from bertops.cli.main import app

    monkeypatch.setenv("BERTOPS_HOME", str(tmp_path))
    runner = CliRunner()
    started = runner.invoke(app, ["cluster", "monitoring", "up", "-n", "m", "--operator", ""])
    assert started.exit_code == 0, started.output
    folder = tmp_path / "clusters" / "m" / "monitoring"
    try:
        url = started.stdout.strip().splitlines()[-1]
        assert httpx.get(url + "/-/ready").status_code == 200
        config = (folder / "prometheus.yml").read_text()
        assert str(folder / "targets" / "bertops-gateway.json") in config
    finally:
        stopped = runner.invoke(app, ["cluster", "monitoring", "down", "-n", "m"])
    assert stopped.exit_code == 0 and "no Prometheus" not in stopped.output
    assert _prometheus_pids(folder / "prometheus.yml") == []
