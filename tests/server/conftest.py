"""Fixtures for the server and gateway tests: tiny model artifacts (see artifacts.py) and
real uvicorn servers on loopback ports, each in its own thread with its own event loop,
reached over real sockets with httpx.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.server.artifacts import write_tiny_artifact

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _few_threads() -> None:
    # Other engineers run tests on the same 2 cores.
    import torch

    torch.set_num_threads(1)


class LiveServer:
    """A uvicorn server in a thread on 127.0.0.1 with a pre-bound port."""

    def __init__(self, app: Any, port: int = 0, graceful_timeout: int | None = 10) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="on",
            ws="none",
            timeout_graceful_shutdown=graceful_timeout,
            # Clients keep idle connections in their pool. On a starved CI machine one can
            # sit idle past uvicorn's 5 s default and be closed by the server just as the
            # client reuses it (the HTTP/1.1 keep-alive race: a ReadError on the client).
            # A minute keeps the tests about routing and batching, not that race.
            timeout_keep_alive=60,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self, timeout: float = 30) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., LiveServer]]:
    """serve(app) -> a started LiveServer; all are stopped after the test."""
    servers: list[LiveServer] = []

    def start(app: Any, port: int = 0) -> LiveServer:
        server = LiveServer(app, port).start()
        servers.append(server)
        return server

    yield start
    for server in servers:  # ask all to exit at once, then wait: faster teardown
        server.server.should_exit = True
    for server in reversed(servers):
        server.stop()


def wait_ready(url: str, path: str = "/v2/health/ready", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{url}{path} never became ready")


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_artifact(tmp_path_factory.mktemp("models") / "tiny-v1")
