"""Background calls of the gateway: shadow traffic and the pair calls of
:mod:`~bertops.server.gateway.pairing`. Both are fire and forget, on one connection pool
of their own and under one cap on calls in flight (:class:`Background`), so a slow or
saturated backend never delays or starves the callers' requests.

The gateway mirrors inference requests to a shadow backend (:class:`Shadow`); its answers
are never returned, only counted (requests, latency, predicted labels) and, for answers
stable gave, paired with stable's labels (see :mod:`~bertops.server.gateway.pairing`).

Owned by :class:`bertops.server.gateway.app.Gateway`, which opens
:attr:`Background.client` in its lifespan, calls :meth:`Shadow.mirror` after answering
and :meth:`Background.drain` on shutdown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from bertops.api.routes import Backend
from bertops.server.binary import HEADER
from bertops.server.gateway.bodies import MAX_ANSWER_BYTES, BodyTooLargeError, read_answer
from bertops.server.gateway.inference import backend_path
from bertops.server.gateway.metrics import GatewayMetrics

VARIANT_HEADER = "x-bertops-variant"


@dataclass(frozen=True)
class Call:
    """A caller's request to repeat in the background, as the gateway forwarded it."""

    method: str
    path: str  # the caller's path, rewritten per backend on sending
    query: str  # "" or "?" and the caller's query
    body: bytes
    headers: Mapping[str, str]
    timeout: float


@dataclass(frozen=True)
class Answer:
    status: int
    content: bytes
    binary_header: str | None  # the binary tensor extension's header, if any
    seconds: float


class Background:
    """Fire-and-forget calls on their own pool, at most ``max_in_flight`` at a time."""

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self.client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, call: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Run ``call()`` as a task and return at once; False (nothing started) when the
        cap is reached, for the caller to count the drop."""
        if len(self._tasks) >= self.max_in_flight:
            return False
        task = asyncio.create_task(call())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def send(self, backend: Backend, call: Call, variant: str) -> Answer:
        """``call`` sent to ``backend``, its variant header set to ``variant``; raises
        httpx.HTTPError or BodyTooLargeError."""
        assert self.client is not None, "the gateway app is not started"
        headers = {**call.headers, VARIANT_HEADER: variant}
        url = backend.url.rstrip("/") + backend_path(backend, call.path) + call.query
        started = time.perf_counter()
        async with self.client.stream(
            call.method, url, content=call.body, headers=headers, timeout=call.timeout
        ) as answer:
            content = await read_answer(answer, MAX_ANSWER_BYTES)
            return Answer(
                answer.status_code,
                content,
                answer.headers.get(HEADER),
                time.perf_counter() - started,
            )

    async def drain(self, seconds: float = 5) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=seconds)


class Shadow:
    """Mirrors inferences to the routes' shadow backend and counts its answers."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        background: Background,
        count_predictions: Callable[[str, str, bytes, str | None], tuple[str, ...]],
    ) -> None:
        self.metrics = metrics
        self.background = background
        self.count_predictions = count_predictions

    def mirror(
        self,
        shadow: Backend,
        call: Call,
        on_labels: Callable[[tuple[str, ...]], None] | None = None,
    ) -> None:
        """Start the shadow call and return at once; ``on_labels`` gets the labels the
        shadow predicted, when it answered."""
        if not self.background.start(lambda: self._call(shadow, call, on_labels)):
            self.metrics.shadow.labels(shadow.name, "dropped").inc()

    async def _call(
        self,
        shadow: Backend,
        call: Call,
        on_labels: Callable[[tuple[str, ...]], None] | None,
    ) -> None:
        try:
            answer = await self.background.send(shadow, call, "shadow")
        except (httpx.HTTPError, BodyTooLargeError):
            self.metrics.shadow.labels(shadow.name, "error").inc()
            self.metrics.errors.labels("shadow", shadow.name, "unavailable", "inference").inc()
            return
        self.metrics.latency.labels("shadow", shadow.name, "inference").observe(answer.seconds)
        self.metrics.requests.labels("shadow", shadow.name, str(answer.status), "inference").inc()
        if answer.status != 200:
            self.metrics.shadow.labels(shadow.name, "error").inc()
            return
        self.metrics.shadow.labels(shadow.name, "ok").inc()
        labels = self.count_predictions("shadow", shadow.name, answer.content, answer.binary_header)
        if on_labels is not None:
            on_labels(labels)
