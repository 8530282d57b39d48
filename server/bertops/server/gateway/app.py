"""The gateway's ASGI apps: the public one proxies every inference and protocol request
to the stable or canary model server (by weight, sticky by a key as the routes' sticky
mode says, forced by a header only when the routes name one), mirrors inferences to an
optional shadow, pairs a candidate's answers with stable's (see
:mod:`~bertops.server.gateway.pairing`) and accepts ground-truth feedback; the metrics
one serves the per-variant metrics on a port of its own; the admin one (loopback, see
:mod:`~bertops.server.gateway.admin`) swaps the routes at run time.

Built by :class:`Gateway` / :func:`create_gateway` (called by ``bertops server gateway``
and the tests). Public paths: ``/healthz``, ``/readyz``, ``POST /feedback``; everything
else but ``/metrics`` is proxied. Each request takes one snapshot of the routes, so a
change never affects a request already in flight. Every request id is issued here (feedback is
only taken for those, see :mod:`~bertops.server.gateway.feedback`). Response headers
naming the variant and model are off unless ``expose_headers`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bertops.server import binary
from bertops.server.gateway import bodies
from bertops.server.gateway.access import FeedbackAccess
from bertops.server.gateway.admin import admin_app
from bertops.server.gateway.feedback import FeedbackDesk, LabelBook
from bertops.server.gateway.inference import (
    answer_labels,
    backend_path,
    is_inference,
    predicted,
    request_texts,
)
from bertops.server.gateway.metrics import GatewayMetrics
from bertops.server.gateway.pairing import Pairing
from bertops.server.gateway.routes import VARIANTS, Backend, Routes, RouteSource, Variant, choose
from bertops.server.gateway.served import Served, ServedStore
from bertops.server.gateway.shadow import VARIANT_HEADER, Background, Call, Shadow

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
MODEL_HEADER = "x-bertops-model"
# Headers passed to the backend; hop-by-hop ones (connection, keep-alive, ...) never are.
# The binary tensor data extension's header says where a body's JSON part ends.
FORWARDED_HEADERS = (
    "content-type",
    "accept",
    "authorization",
    "traceparent",
    "tracestate",
    binary.HEADER,
)


class Gateway:
    def __init__(
        self,
        routes: Routes | None = None,
        source: RouteSource | None = None,
        *,
        registry: CollectorRegistry | None = None,
        admin_token: str | None = None,
        feedback_log: str | Path | None = None,
        feedback_access: FeedbackAccess | None = None,
        poll_seconds: float = 1.0,
        max_shadow_in_flight: int = 64,
        feedback_window_seconds: float = 3600,
        feedback_max_bytes: int = 64 << 20,
        expose_headers: bool = False,
        max_body_bytes: int = bodies.MAX_PROXY_BODY_BYTES,
    ) -> None:
        if routes is None:
            if source is None:
                raise ValueError("give routes or a source to read them from")
            routes = source.fetch()
            assert routes is not None
        self.source = source
        self.metrics = GatewayMetrics(registry)
        self.poll_seconds = poll_seconds
        self.expose_headers = expose_headers
        self.max_body_bytes = max_body_bytes
        # Answers and their texts have a budget each (see gateway.served).
        self.served = ServedStore(
            feedback_max_bytes, feedback_window_seconds, max_text_bytes=feedback_max_bytes
        )
        self.metrics.remembered.set_function(lambda: self.served.bytes)
        self.labels = LabelBook()
        # Shadow and pair calls share one pool and one cap (max_shadow_in_flight).
        self.background = Background(max_shadow_in_flight)
        self.shadow = Shadow(self.metrics, self.background, self._count_predictions)
        self.pairing = Pairing(self.metrics, self.served, self.background)
        self._client: httpx.AsyncClient | None = None
        # Without a FeedbackAccess nobody may send feedback (403 says how to allow it).
        access = feedback_access or FeedbackAccess()
        self.feedback = FeedbackDesk(
            self.metrics, self.served, self.labels, feedback_log, self._http, access
        )
        self.routes = routes
        self._apply(routes, "initial")
        self.app = self._build()
        # Its own listener (--metrics-port): the counters name the canary and its model,
        # which a client could use to aim at it; only Prometheus and the operator read them.
        self.metrics_app = Starlette(
            routes=[Route("/metrics", self.metrics_endpoint, methods=["GET"])]
        )
        self.admin_app = (
            admin_app(
                admin_token,
                lambda: self.routes,
                lambda r: self._apply(r, "admin"),
                self._admin_rejected,
            )
            if admin_token
            else None
        )

    # -- routes ------------------------------------------------------------------------

    def _apply(self, routes: Routes, source: str) -> None:
        self.routes = routes  # one assignment: each request reads one consistent table
        self.labels.from_routes(routes)
        weight = routes.canary_weight if routes.canary is not None else 0.0
        self.metrics.weight.labels("stable").set(100 - weight)
        self.metrics.weight.labels("canary").set(weight)
        self.metrics.routes.info(
            {
                "stable": routes.stable.name,
                "canary": routes.canary.name if routes.canary else "",
                "shadow": routes.shadow.name if routes.shadow else "",
                "revision": routes.revision or "",
            }
        )
        self.metrics.reloads.labels(source, "applied").inc()
        log.info(
            "routes applied from %s: stable=%s canary=%s weight=%s shadow=%s",
            source,
            routes.stable.name,
            routes.canary.name if routes.canary else None,
            weight,
            routes.shadow.name if routes.shadow else None,
        )

    def _admin_rejected(self) -> None:
        self.metrics.reloads.labels("admin", "rejected").inc()

    async def _watch(self) -> None:
        assert self.source is not None
        kind = "url" if self.source.is_url else "file"
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                routes = await asyncio.to_thread(self.source.fetch)
            except (OSError, ValueError, ValidationError, httpx.HTTPError) as error:
                # A broken routes file must not take traffic down: keep the last good one.
                self.metrics.reloads.labels(kind, "rejected").inc()
                log.warning(
                    "routes from %s rejected, keeping current: %s", self.source.location, error
                )
                continue
            if routes is not None:
                self._apply(routes, kind)

    # -- lifecycle ---------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        assert self._client is not None, "the gateway app is not started"
        return self._client

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        self._client = httpx.AsyncClient(limits=limits, timeout=None)
        # Its own pool: a slow shadow or stable pair call can never hold the connections
        # callers need.
        self.background.client = httpx.AsyncClient(limits=limits, timeout=None)
        self.feedback.open_log()
        watcher = asyncio.create_task(self._watch()) if self.source is not None else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            await self.background.drain()
            await self._client.aclose()
            await self.background.client.aclose()
            await asyncio.to_thread(self.feedback.close_log)

    def _build(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
        return Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.healthz, methods=["GET"]),
                Route("/metrics", self.metrics_elsewhere, methods=["GET"]),
                Route("/feedback", self.feedback.handle, methods=["POST"]),
                Route("/{path:path}", self.proxy, methods=methods),
            ],
            lifespan=self.lifespan,
        )

    async def healthz(self, _request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def metrics_endpoint(self, _request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def metrics_elsewhere(self, _request: Request) -> Response:
        # Not proxied either: a model server's /metrics is no more public than ours.
        return JSONResponse({"error": "not found (metrics are on the metrics port)"}, 404)

    # -- proxy -------------------------------------------------------------------------

    async def proxy(self, request: Request) -> Response:
        routes = self.routes  # the snapshot this request uses from start to end
        started = time.perf_counter()
        variant, new_key = choose(routes, request.headers, request.cookies)
        backend = routes.backend(variant)
        try:
            body = await bodies.read_body(request, self.max_body_bytes)
        except bodies.BodyRefusedError as error:
            return error.refusal.response()
        request_id = uuid.uuid4().hex  # always ours: feedback trusts only ids we issued
        path = request.url.path
        endpoint = "inference" if is_inference(request.method, path) else "other"
        headers = {
            name: value
            for name in FORWARDED_HEADERS
            if (value := request.headers.get(name)) is not None
        }
        headers[REQUEST_ID_HEADER] = request_id
        headers[VARIANT_HEADER] = variant
        query = "?" + request.url.query if request.url.query else ""
        call = Call(request.method, path, query, body, headers, routes.timeout_seconds)
        url = backend.url.rstrip("/") + backend_path(backend, path) + query
        try:
            async with self._http().stream(
                request.method, url, content=body, headers=headers, timeout=routes.timeout_seconds
            ) as answer:
                content = await bodies.read_answer(answer, bodies.MAX_ANSWER_BYTES)
        except (httpx.HTTPError, bodies.BodyTooLargeError) as error:
            return self._backend_failed(variant, backend, endpoint, error, started)
        status = answer.status_code
        if status >= 500:
            self.metrics.errors.labels(variant, backend.name, f"status_{status}", endpoint).inc()
        self.metrics.requests.labels(variant, backend.name, str(status), endpoint).inc()
        self.metrics.latency.labels(variant, backend.name, endpoint).observe(
            time.perf_counter() - started
        )
        if endpoint == "inference":
            self._answered(routes, request, request_id, variant, backend, answer, content, call)
        out_headers = {REQUEST_ID_HEADER: request_id, **self._reveal(variant, backend)}
        for name in ("content-type", binary.HEADER):
            if name in answer.headers:
                out_headers[name] = answer.headers[name]
        response = Response(content, status_code=status, headers=out_headers)
        if new_key is not None and routes.sticky.cookie:
            response.set_cookie(
                routes.sticky.cookie, new_key, max_age=30 * 86400, httponly=True, samesite="lax"
            )
        return response

    def _answered(
        self,
        routes: Routes,
        request: Request,
        request_id: str,
        variant: Variant,
        backend: Backend,
        answer: httpx.Response,
        content: bytes,
        call: Call,
    ) -> None:
        """After an inference: count and remember its answer, mirror it to the shadow
        and, with compare, ask stable what the canary answered (both in the background,
        paired with this answer's labels)."""
        labels: tuple[str, ...] = ()
        if answer.status_code == 200:
            labels = self._count_predictions(
                variant, backend.name, content, answer.headers.get(binary.HEADER)
            )
            self.labels.learn(backend.name, answer_labels(content))
            paired = (routes.shadow is not None and variant == "stable") or (
                routes.compare and variant == "canary"
            )
            self._remember(request_id, variant, backend, labels, request, call.body, paired)
        if routes.shadow is not None:
            # Only stable's answers are the reference a shadow's are paired with.
            pair = (
                self.pairing.shadow_labels(request_id, routes.stable, labels, routes.shadow)
                if variant == "stable" and labels
                else None
            )
            self.shadow.mirror(routes.shadow, call, pair)
        if routes.compare and variant == "canary" and labels:
            self.pairing.ask_stable(request_id, routes.stable, backend, labels, call)

    def _remember(
        self,
        request_id: str,
        variant: str,
        backend: Backend,
        labels: tuple[str, ...],
        request: Request,
        body: bytes,
        paired: bool = False,
    ) -> None:
        """Keep the answer for feedback; with a feedback log, its texts too (the rows
        persisted for retraining need them). ``paired``: another model's answer to it is
        on its way (feedback before it waits for it)."""
        texts = None
        if self.feedback.log_path is not None:
            texts = request_texts(request.url.path, body, request.headers.get(binary.HEADER))
            if texts is not None and len(texts) != len(labels):
                texts = None
        self.served.add(
            request_id,
            Served(variant, backend, labels, time.monotonic(), texts=texts, expects_pair=paired),
        )

    def _reveal(self, variant: str, backend: Backend) -> dict[str, str]:
        """Headers naming the variant and model version, only when configured: they tell
        anyone which version answered."""
        if not self.expose_headers:
            return {}
        return {VARIANT_HEADER: variant, MODEL_HEADER: backend.name}

    def _backend_failed(
        self, variant: Variant, backend: Backend, endpoint: str, error: Exception, started: float
    ) -> Response:
        if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            status, reason = 503, "unavailable"
        elif isinstance(error, httpx.TimeoutException):
            status, reason = 504, "timeout"
        else:
            status, reason = 502, "bad_gateway"
        self.metrics.errors.labels(variant, backend.name, reason, endpoint).inc()
        self.metrics.requests.labels(variant, backend.name, str(status), endpoint).inc()
        self.metrics.latency.labels(variant, backend.name, endpoint).observe(
            time.perf_counter() - started
        )
        log.warning(
            "%s backend %s at %s failed: %s: %s",
            variant,
            backend.name,
            backend.url,
            type(error).__name__,
            error,
        )
        # The caller learns which side failed only when version headers are exposed.
        message = (
            f"{variant} backend {backend.name} failed: {type(error).__name__}"
            if self.expose_headers
            else "the model server is unavailable"
        )
        return JSONResponse(
            {"error": message}, status_code=status, headers=self._reveal(variant, backend)
        )

    def _count_predictions(
        self, variant: str, model: str, body: bytes, binary_header: str | None = None
    ) -> tuple[str, ...]:
        pairs = predicted(body, binary_header)
        for label, score in pairs:
            self.metrics.predictions.labels(variant, model, label).inc()
            if isinstance(score, int | float):
                self.metrics.confidence.labels(variant, model).observe(float(score))
        return tuple(label for label, _ in pairs)


def create_gateway(
    routes: Routes | None = None, source: RouteSource | None = None, **options: Any
) -> Starlette:
    """The public app only (no admin listener); ``options`` are :class:`Gateway`'s."""
    return Gateway(routes, source, **options).app


__all__ = ["VARIANTS", "Gateway", "create_gateway"]
