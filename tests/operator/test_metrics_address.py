"""The operator's /metrics listens on loopback unless told otherwise (`--metrics-address`);
only the operator image, where Prometheus scrapes the pod, passes 0.0.0.0."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertops.operator import run
from bertops.operator.config import OperatorConfig
from bertops.operator.metrics import OperatorMetrics

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on port, from /proc/net/tcp (hex, LE)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_metrics_bind_loopback_by_default() -> None:
    port = free_port()
    stop = OperatorMetrics().serve(port)
    try:
        assert listening_addresses(port) == {"127.0.0.1"}
    finally:
        stop()


@pytest.mark.parametrize(
    ("args", "expected"), [([], "127.0.0.1"), (["--metrics-address", "0.0.0.0"], "0.0.0.0")]
)
def test_metrics_address_flag(
    args: list[str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[OperatorConfig] = []
    monkeypatch.setattr(run, "run_operator", lambda config, **_: seen.append(config))
    result = CliRunner().invoke(run.app, ["--runtime", "local", *args])
    assert result.exit_code == 0, result.output
    assert seen[0].metrics_address == expected
    assert OperatorConfig().metrics_address == "127.0.0.1"


def test_operator_image_exposes_metrics_to_prometheus() -> None:
    dockerfile = (ROOT / "operator" / "Dockerfile").read_text()
    match = re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.M)
    assert match, "the operator image has an exec-form ENTRYPOINT"
    entrypoint = json.loads(match[1])
    assert entrypoint[entrypoint.index("--metrics-address") + 1] == "0.0.0.0"
