"""The one uvicorn configuration of the model server and the gateway's listeners: HTTP/1.1
only (no websockets), the app's lifespan on, no ``server`` header, a bounded number of
requests at once (past it uvicorn answers 503 at once instead of queueing without bound,
so the bodies held stay within the container's memory), idle keep-alive connections
closed after a while, and a graceful drain on shutdown.

Used by ``bertops server serve`` (:mod:`bertops.server.cli`) and the gateway's public,
metrics and admin listeners (:mod:`bertops.server.gateway.admin`). The management UI
runs its own (it may not import the server package, see the import rules).
"""

from __future__ import annotations

import math
from typing import Any

import uvicorn


def uvicorn_config(
    app: Any,
    host: str,
    port: int,
    *,
    graceful_seconds: int,
    access_log: bool,
    limit_concurrency: int | None = None,
    keep_alive_seconds: float = 5.0,
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        ws="none",
        access_log=access_log,
        timeout_graceful_shutdown=graceful_seconds,
        limit_concurrency=limit_concurrency,
        timeout_keep_alive=math.ceil(keep_alive_seconds),
        server_header=False,
        log_level="info",
    )
