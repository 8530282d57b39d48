"""The gateway's memory under hostile bodies, on the real process (``bertops server
gateway``) on loopback: 30 clients send a maximum-size body at once to a stable whose
answers take a second (so every body is held at the same time), and the gateway's peak
resident memory stays under its container's limit; past ``--limit-concurrency`` it
answers 503 at once instead of queueing, a body one byte over the limit gets 413, and a
body that stops arriving gets 408 (the read deadline, checked on the handler)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml
from starlette.requests import Request

from bertops.server.gateway.bodies import MAX_PROXY_BODY_BYTES, BodyTimeoutError, read_body
from tests.server.conftest import LiveServer, wait_ready
from tests.server.helpers import Stub
from tests.server.test_gateway import free_port, routes

GATEWAY_MEMORY_LIMIT = 512 << 20  # gateway_manifests: limits.memory 512Mi
CLIENTS = 30


def peak_rss(pid: int) -> int:
    """VmHWM: the most resident memory the process has had, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def max_body() -> bytes:
    """A /predict body of exactly the gateway's limit."""
    head, tail = b'{"texts": ["', b'"]}'
    return head + b"x" * (MAX_PROXY_BODY_BYTES - len(head) - len(tail)) + tail


def send_at_once(url: str, body: bytes, clients: int) -> Counter[int]:
    """``clients`` threads POST ``body`` to /predict at the same moment; their statuses."""
    statuses: Counter[int] = Counter()
    start = threading.Barrier(clients)

    def client() -> None:
        start.wait()
        answer = httpx.post(
            url + "/predict", content=body, headers={"content-type": "application/json"}, timeout=60
        )
        statuses[answer.status_code] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return statuses


@pytest.mark.slow
def test_thirty_maximum_bodies_at_once_stay_under_the_memory_limit(
    serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    stable = serve(Stub("v1", "positive", delay=1.0).app()).url
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(yaml.safe_dump(routes(stable).to_wire()))
    port = free_port()
    argv = [sys.executable, "-m", "bertops.cli.main", "server", "gateway"]
    argv += ["--routes", str(routes_file), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--admin-port", str(free_port()), "--limit-concurrency", "32"]
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, "/healthz")
        before = peak_rss(process.pid)
        body = max_body()
        statuses = send_at_once(url, body, CLIENTS)
        peak = peak_rss(process.pid)
        assert statuses == Counter({200: CLIENTS}), statuses
        # Past the limit: 503 at once for the rest, never a queue of bodies.
        crowd = send_at_once(url, body, 40)
        assert set(crowd) == {200, 503} and crowd[200] <= 32, crowd
        peak = peak_rss(process.pid)
        assert peak < GATEWAY_MEMORY_LIMIT, f"peak RSS {peak >> 20} MiB"
        print(
            f"\ngateway peak RSS {peak >> 20} MiB ({before >> 20} MiB idle) with {CLIENTS} "
            f"bodies of {MAX_PROXY_BODY_BYTES >> 10} KiB at once"
        )
        over = httpx.post(url + "/predict", content=body + b" ", timeout=30)
        assert over.status_code == 413 and "exceeds" in over.json()["error"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, (tmp_path / "gateway.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def test_a_body_that_stops_arriving_is_refused_after_the_deadline() -> None:
    async def stalled() -> dict[str, object]:
        await asyncio.sleep(3600)  # the client sent its headers and then nothing
        return {"type": "http.request", "body": b"", "more_body": False}

    request = Request({"type": "http", "method": "POST", "headers": []}, receive=stalled)
    with pytest.raises(BodyTimeoutError, match=r"did not arrive within 0\.2 s"):
        asyncio.run(read_body(request, 1024, seconds=0.2))
