"""Shadow traffic: the gateway mirrors inference requests to a shadow backend, fire and
forget, on its own connection pool and with a cap on calls in flight, so a slow shadow
never delays or starves the callers' requests. Its answers are only counted (requests,
latency, predicted labels), never returned.

Owned by :class:`bertops.server.gateway.app.Gateway`, which calls :meth:`Shadow.mirror`
after answering and :meth:`Shadow.drain` on shutdown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from bertops.api.routes import Backend
from bertops.server.binary import HEADER
from bertops.server.gateway.bodies import MAX_ANSWER_BYTES, BodyTooLargeError, read_answer
from bertops.server.gateway.inference import backend_path
from bertops.server.gateway.metrics import GatewayMetrics

VARIANT_HEADER = "x-bertops-variant"


class Shadow:
    def __init__(
        self,
        metrics: GatewayMetrics,
        max_in_flight: int,
        count_predictions: Callable[[str, str, bytes, str | None], object],
    ) -> None:
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.count_predictions = count_predictions
        self.client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def mirror(
        self,
        shadow: Backend,
        method: str,
        path: str,
        body: bytes,
        *,
        headers: dict[str, str],
        timeout: float,
    ) -> None:
        """Start the shadow call and return at once."""
        if len(self._tasks) >= self.max_in_flight:
            self.metrics.shadow.labels(shadow.name, "dropped").inc()
            return
        task = asyncio.create_task(
            self._call(shadow, method, path, body, headers=dict(headers), seconds=timeout)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(
        self,
        shadow: Backend,
        method: str,
        path: str,
        body: bytes,
        *,
        headers: dict[str, str],
        seconds: float,
    ) -> None:
        assert self.client is not None
        headers[VARIANT_HEADER] = "shadow"
        started = time.perf_counter()
        url = shadow.url.rstrip("/") + backend_path(shadow, path)
        try:
            async with self.client.stream(
                method, url, content=body, headers=headers, timeout=seconds
            ) as answer:
                content = await read_answer(answer, MAX_ANSWER_BYTES)
                status = answer.status_code
                binary_header = answer.headers.get(HEADER)
        except (httpx.HTTPError, BodyTooLargeError):
            self.metrics.shadow.labels(shadow.name, "error").inc()
            self.metrics.errors.labels("shadow", shadow.name, "unavailable", "inference").inc()
            return
        self.metrics.latency.labels("shadow", shadow.name, "inference").observe(
            time.perf_counter() - started
        )
        self.metrics.requests.labels("shadow", shadow.name, str(status), "inference").inc()
        if status == 200:
            self.metrics.shadow.labels(shadow.name, "ok").inc()
            self.count_predictions("shadow", shadow.name, content, binary_header)
        else:
            self.metrics.shadow.labels(shadow.name, "error").inc()

    async def drain(self, seconds: float = 5) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=seconds)
