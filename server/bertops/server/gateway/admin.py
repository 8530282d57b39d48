"""The gateway's admin endpoint and how the gateway's two listeners run.

``GET|PUT /admin/routes`` (bearer token) is served by its own small app on its own port,
bound to loopback only: public traffic can never reach it, even with the token, and
only a process on the same host (or in the same pod) can swap the routes. On Kubernetes
the operator changes routes through the mounted ConfigMap instead.

:func:`admin_app` is built by :class:`bertops.server.gateway.app.Gateway`;
:func:`serve_gateway` is called by ``bertops server gateway``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import signal
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bertops.api.routes import Routes
from bertops.server.gateway.bodies import MAX_ADMIN_BYTES, BodyRefusedError, read_body
from bertops.server.gateway.routes import parse_routes
from bertops.server.listen import uvicorn_config

ADMIN_HOST = "127.0.0.1"


def admin_app(
    token: str,
    current: Callable[[], Routes],
    apply: Callable[[Routes], None],
    on_rejected: Callable[[], None],
) -> Starlette:
    """GET returns the routes in force; PUT replaces them (400 when invalid)."""

    async def routes_endpoint(request: Request) -> Response:
        supplied = request.headers.get("authorization", "")
        if not hmac.compare_digest(supplied.encode(), f"Bearer {token}".encode()):
            return JSONResponse(
                {"error": "missing or wrong bearer token"},
                status_code=401,
                headers={"www-authenticate": "Bearer"},
            )
        if request.method == "PUT":
            try:
                routes = parse_routes(await read_body(request, MAX_ADMIN_BYTES))
            except BodyRefusedError as error:
                on_rejected()
                return error.refusal.response()
            except (ValueError, ValidationError) as error:
                on_rejected()
                return JSONResponse({"error": f"invalid routes: {error}"}, status_code=400)
            apply(routes)
        return JSONResponse(current().to_wire())

    return Starlette(routes=[Route("/admin/routes", routes_endpoint, methods=["GET", "PUT"])])


class _Listener(uvicorn.Server):
    """A uvicorn server that leaves signals to :func:`serve_gateway`: two servers each
    installing their own handler would leave only the last one told to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listener(
    app: Any,
    host: str,
    port: int,
    graceful_seconds: int,
    access_log: bool,
    limit_concurrency: int | None = None,
) -> uvicorn.Server:
    # limit_concurrency bounds the bodies held at one time (each up to --max-body-bytes).
    config = uvicorn_config(
        app,
        host,
        port,
        graceful_seconds=graceful_seconds,
        access_log=access_log,
        limit_concurrency=limit_concurrency,
    )
    return _Listener(config)


async def _serve_all(servers: list[uvicorn.Server]) -> None:
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    try:
        # When one listener ends (stopped, or failed to bind), the others end too.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop()
        await asyncio.gather(*tasks)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def serve_gateway(
    public: Any,
    admin: Any | None,
    *,
    host: str,
    port: int,
    admin_port: int,
    graceful_seconds: int,
    access_log: bool,
    limit_concurrency: int | None = None,
    metrics: Any | None = None,
    metrics_port: int = 9091,
) -> None:
    """Run the public listener, the metrics app on ``metrics_port`` (same address), and,
    when given, the admin app on loopback, until a SIGTERM/SIGINT stops them all (each
    drains its in-flight requests)."""
    servers = [listener(public, host, port, graceful_seconds, access_log, limit_concurrency)]
    if metrics is not None:
        servers.append(listener(metrics, host, metrics_port, graceful_seconds, False, 4))
    if admin is not None:
        servers.append(listener(admin, ADMIN_HOST, admin_port, graceful_seconds, access_log))
    # uvicorn's loop (uvloop when installed), as Server.run would pick it.
    with asyncio.Runner(loop_factory=servers[0].config.get_loop_factory()) as runner:
        runner.run(_serve_all(servers))
