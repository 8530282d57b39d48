"""The gateway's ASGI app: proxies every inference and protocol request to the stable or
canary model server (by weight, sticky by a request key, overridable by a header),
mirrors inference requests to an optional shadow without waiting for it, accepts
ground-truth feedback, exposes per-variant metrics and swaps its routes at run time.

Built by :func:`create_gateway` (called by ``bertops server gateway`` and the tests).
Own paths: ``/healthz``, ``/readyz``, ``/metrics``, ``POST /feedback``,
``GET|PUT /admin/routes`` (bearer token); everything else is proxied. Each request takes
one snapshot of the routes, so a change never affects a request already in flight.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bertops.server.gateway.metrics import GatewayMetrics
from bertops.server.gateway.routes import (
    VARIANTS,
    Backend,
    Routes,
    RouteSource,
    Variant,
    choose_variant,
    parse_routes,
)

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
VARIANT_HEADER = "x-bertops-variant"
MODEL_HEADER = "x-bertops-model"
# Headers passed to the backend; hop-by-hop ones (connection, keep-alive, ...) never are.
FORWARDED_HEADERS = ("content-type", "accept", "authorization", "traceparent", "tracestate")
_MODEL_PATH = re.compile(r"^/v2/models/[^/]+(?=/|$)")
_INFER_PATH = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
MAX_BODY_BYTES = 64 << 20


def is_inference(method: str, path: str) -> bool:
    return method == "POST" and (path == "/predict" or bool(_INFER_PATH.match(path)))


def backend_path(backend: Backend, path: str) -> str:
    if backend.model is not None:
        return _MODEL_PATH.sub(f"/v2/models/{backend.model}", path)
    return path


def predicted(body: bytes) -> list[tuple[str, float | None]]:
    """(label, score) pairs from a /predict or OIP infer answer; [] if it has none."""
    try:
        document = json.loads(body)
    except ValueError:
        return []
    if not isinstance(document, dict):
        return []
    if isinstance(document.get("predictions"), list):
        return [(str(p.get("label")), p.get("score")) for p in document["predictions"]
                if isinstance(p, dict) and "label" in p]
    outputs = {o.get("name"): o.get("data") for o in document.get("outputs") or []
               if isinstance(o, dict)}
    labels = outputs.get("label") or []
    scores = outputs.get("score") or [None] * len(labels)
    return [(str(label), score) for label, score in zip(labels, scores, strict=False)]


@dataclass(frozen=True)
class Served:
    """What the gateway remembers of an answered request, to score feedback on it."""

    variant: str
    model: str
    labels: tuple[str, ...]


class Gateway:
    def __init__(self, routes: Routes | None = None, source: RouteSource | None = None, *,
                 registry: CollectorRegistry | None = None, admin_token: str | None = None,
                 feedback_log: Path | None = None, poll_seconds: float = 1.0,
                 max_shadow_in_flight: int = 64, remember: int = 100_000) -> None:
        if routes is None:
            if source is None:
                raise ValueError("give routes or a source to read them from")
            routes = source.fetch()
            assert routes is not None
        self.source = source
        self.metrics = GatewayMetrics(registry)
        self.admin_token = admin_token
        self.feedback_log = feedback_log
        self.poll_seconds = poll_seconds
        self.max_shadow_in_flight = max_shadow_in_flight
        self._served: OrderedDict[str, Served] = OrderedDict()
        self._remember = remember
        self._feedback_counts: dict[tuple[str, str], list[int]] = {}
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._shadow_client: httpx.AsyncClient | None = None
        self.routes = routes
        self._apply(routes, "initial")
        self.app = self._build()

    # -- routes ------------------------------------------------------------------------

    def _apply(self, routes: Routes, source: str) -> None:
        self.routes = routes  # one assignment: each request reads one consistent table
        weight = routes.canary_weight if routes.canary is not None else 0.0
        self.metrics.weight.labels("stable").set(100 - weight)
        self.metrics.weight.labels("canary").set(weight)
        self.metrics.routes.info({
            "stable": routes.stable.name, "canary": routes.canary.name if routes.canary else "",
            "shadow": routes.shadow.name if routes.shadow else "",
            "revision": routes.revision or ""})
        self.metrics.reloads.labels(source, "applied").inc()
        log.info("routes applied from %s: stable=%s canary=%s weight=%s shadow=%s", source,
                 routes.stable.name, routes.canary.name if routes.canary else None, weight,
                 routes.shadow.name if routes.shadow else None)

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
                log.warning("routes from %s rejected, keeping current: %s",
                            self.source.location, error)
                continue
            if routes is not None:
                self._apply(routes, kind)

    # -- lifecycle ---------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        self._client = httpx.AsyncClient(limits=limits, timeout=None)
        # Its own pool: a slow shadow can never hold the connections callers need.
        self._shadow_client = httpx.AsyncClient(limits=limits, timeout=None)
        watcher = asyncio.create_task(self._watch()) if self.source is not None else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            if self._shadow_tasks:
                await asyncio.wait(self._shadow_tasks, timeout=5)
            await self._client.aclose()
            await self._shadow_client.aclose()

    def _build(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
        return Starlette(routes=[
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.healthz, methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            Route("/feedback", self.feedback, methods=["POST"]),
            Route("/admin/routes", self.admin_routes, methods=["GET", "PUT"]),
            Route("/{path:path}", self.proxy, methods=methods),
        ], lifespan=self.lifespan)

    # -- own endpoints -----------------------------------------------------------------

    async def healthz(self, _request: Request) -> Response:
        return JSONResponse({"ok": True, "revision": self.routes.revision})

    async def metrics_endpoint(self, _request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def admin_routes(self, request: Request) -> Response:
        if not self.admin_token:
            return JSONResponse({"error": "admin endpoint disabled (no token configured)"},
                                status_code=404)
        supplied = request.headers.get("authorization", "")
        if not hmac.compare_digest(supplied.encode(), f"Bearer {self.admin_token}".encode()):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                headers={"www-authenticate": "Bearer"})
        if request.method == "PUT":
            try:
                routes = parse_routes(await request.body())
            except (ValueError, ValidationError) as error:
                self.metrics.reloads.labels("admin", "rejected").inc()
                return JSONResponse({"error": f"invalid routes: {error}"}, status_code=400)
            self._apply(routes, "admin")
        return JSONResponse(self.routes.to_wire())

    async def feedback(self, request: Request) -> Response:
        """Ground truth for earlier answers: ``{"requestId", "label"}`` (the first text),
        ``{"requestId", "labels": [...]}`` (every text), ``{"requestId", "index",
        "label"}``, or a list of these."""
        try:
            document = json.loads(await request.body())
            items = document if isinstance(document, list) else [document]
            entries = [entry for item in items for entry in self._feedback_entries(item)]
        except (ValueError, TypeError) as error:
            return JSONResponse({"error": f"invalid feedback: {error}"}, status_code=400)
        matched = 0
        lines = []
        for request_id, index, label in entries:
            served = self._served.get(request_id)
            record: dict[str, Any] = {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "requestId": request_id, "index": index, "label": label}
            if served is None or index >= len(served.labels):
                self.metrics.feedback.labels("unknown", "unknown", "unmatched").inc()
            else:
                matched += 1
                correct = served.labels[index] == label
                record.update(variant=served.variant, model=served.model,
                              predicted=served.labels[index], correct=correct)
                self.metrics.feedback.labels(
                    served.variant, served.model, "correct" if correct else "incorrect").inc()
                counts = self._feedback_counts.setdefault((served.variant, served.model), [0, 0])
                counts[0] += int(correct)
                counts[1] += 1
                self.metrics.feedback_accuracy.labels(served.variant, served.model).set(
                    counts[0] / counts[1])
            lines.append(json.dumps(record) + "\n")
        if self.feedback_log is not None and lines:
            await asyncio.to_thread(self._append_feedback, lines)
        return JSONResponse({"accepted": len(entries), "matched": matched})

    @staticmethod
    def _feedback_entries(item: object) -> list[tuple[str, int, str]]:
        if not isinstance(item, dict):
            raise TypeError("each feedback item must be an object")
        request_id = item.get("requestId", item.get("request_id"))
        if not isinstance(request_id, str) or not request_id:
            raise TypeError("requestId (a string) is required")
        if "labels" in item:
            labels = item["labels"]
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise TypeError("labels must be a list of strings")
            return [(request_id, i, label) for i, label in enumerate(labels)]
        label, index = item.get("label"), item.get("index", 0)
        if not isinstance(label, str) or not isinstance(index, int) or index < 0:
            raise TypeError("label (a string) is required; index must be an integer >= 0")
        return [(request_id, index, label)]

    def _append_feedback(self, lines: list[str]) -> None:
        assert self.feedback_log is not None
        self.feedback_log.parent.mkdir(parents=True, exist_ok=True)
        with self.feedback_log.open("a", encoding="utf-8") as handle:
            handle.writelines(lines)

    # -- proxy -------------------------------------------------------------------------

    async def proxy(self, request: Request) -> Response:
        routes = self.routes  # the snapshot this request uses from start to end
        started = time.perf_counter()
        sticky = routes.sticky
        key = (request.headers.get(sticky.header) if sticky.header else None) or (
            request.cookies.get(sticky.cookie) if sticky.cookie else None)
        new_key = None
        if key is None and sticky.cookie:
            key = new_key = uuid.uuid4().hex  # the first answer pins the user via a cookie
        override = request.headers.get(routes.override_header) if routes.override_header else None
        variant = choose_variant(routes, key, override)
        backend = routes.backend(variant)
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": "request body too large"}, status_code=413)
        path = request.url.path
        inference = is_inference(request.method, path)
        headers = {name: value for name in FORWARDED_HEADERS
                   if (value := request.headers.get(name)) is not None}
        headers[REQUEST_ID_HEADER] = request_id
        headers[VARIANT_HEADER] = variant
        query = "?" + request.url.query if request.url.query else ""
        url = backend.url.rstrip("/") + backend_path(backend, path) + query
        assert self._client is not None
        try:
            answer = await self._client.request(
                request.method, url, content=body, headers=headers,
                timeout=routes.timeout_seconds)
        except httpx.HTTPError as error:
            return self._backend_failed(variant, backend, error, started)
        if answer.status_code >= 500:
            self.metrics.errors.labels(variant, backend.name, f"status_{answer.status_code}"
                                       ).inc()
        self.metrics.requests.labels(variant, backend.name, str(answer.status_code)).inc()
        self.metrics.latency.labels(variant, backend.name).observe(
            time.perf_counter() - started)
        answered_id = answer.headers.get(REQUEST_ID_HEADER, request_id)
        if inference and answer.status_code == 200:
            labels = self._count_predictions(variant, backend.name, answer.content)
            self._remember_served(answered_id, Served(variant, backend.name, labels))
        if inference and routes.shadow is not None:
            self._mirror(routes.shadow, request.method, path + query, body, headers=headers,
                         timeout=routes.timeout_seconds)
        out_headers = {REQUEST_ID_HEADER: answered_id, VARIANT_HEADER: variant,
                       MODEL_HEADER: backend.name}
        if "content-type" in answer.headers:
            out_headers["content-type"] = answer.headers["content-type"]
        response = Response(answer.content, status_code=answer.status_code, headers=out_headers)
        if new_key is not None and sticky.cookie:
            response.set_cookie(sticky.cookie, new_key, max_age=30 * 86400, httponly=True,
                                samesite="lax")
        return response

    def _backend_failed(self, variant: Variant, backend: Backend, error: httpx.HTTPError,
                        started: float) -> Response:
        if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            status, reason = 503, "unavailable"
        elif isinstance(error, httpx.TimeoutException):
            status, reason = 504, "timeout"
        else:
            status, reason = 502, "bad_gateway"
        self.metrics.errors.labels(variant, backend.name, reason).inc()
        self.metrics.requests.labels(variant, backend.name, str(status)).inc()
        self.metrics.latency.labels(variant, backend.name).observe(time.perf_counter() - started)
        message = (f"{variant} backend {backend.name} at {backend.url} failed: "
                   f"{type(error).__name__}: {error}")
        log.warning(message)
        return JSONResponse({"error": message}, status_code=status,
                            headers={VARIANT_HEADER: variant, MODEL_HEADER: backend.name})

    def _count_predictions(self, variant: str, model: str, body: bytes) -> tuple[str, ...]:
        pairs = predicted(body)
        for label, score in pairs:
            self.metrics.predictions.labels(variant, model, label).inc()
            if isinstance(score, int | float):
                self.metrics.confidence.labels(variant, model).observe(float(score))
        return tuple(label for label, _ in pairs)

    def _remember_served(self, request_id: str, served: Served) -> None:
        self._served[request_id] = served
        if len(self._served) > self._remember:
            self._served.popitem(last=False)  # bounded memory; the oldest go first

    # -- shadow ------------------------------------------------------------------------

    def _mirror(self, shadow: Backend, method: str, path: str, body: bytes, *,
                headers: dict[str, str], timeout: float) -> None:
        """Fire and forget: the caller's answer never waits for the shadow."""
        if len(self._shadow_tasks) >= self.max_shadow_in_flight:
            self.metrics.shadow.labels(shadow.name, "dropped").inc()
            return
        task = asyncio.create_task(
            self._shadow_call(shadow, method, path, body, headers=dict(headers),
                              seconds=timeout))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow_call(self, shadow: Backend, method: str, path: str, body: bytes, *,
                           headers: dict[str, str], seconds: float) -> None:
        assert self._shadow_client is not None
        headers[VARIANT_HEADER] = "shadow"
        started = time.perf_counter()
        try:
            answer = await self._shadow_client.request(
                method, shadow.url.rstrip("/") + backend_path(shadow, path), content=body,
                headers=headers, timeout=seconds)
        except httpx.HTTPError:
            self.metrics.shadow.labels(shadow.name, "error").inc()
            self.metrics.errors.labels("shadow", shadow.name, "unavailable").inc()
            return
        self.metrics.latency.labels("shadow", shadow.name).observe(time.perf_counter() - started)
        self.metrics.requests.labels("shadow", shadow.name, str(answer.status_code)).inc()
        if answer.status_code == 200:
            self.metrics.shadow.labels(shadow.name, "ok").inc()
            self._count_predictions("shadow", shadow.name, answer.content)
        else:
            self.metrics.shadow.labels(shadow.name, "error").inc()


def create_gateway(routes: Routes | None = None, source: RouteSource | None = None, *,
                   registry: CollectorRegistry | None = None, admin_token: str | None = None,
                   feedback_log: Path | None = None, poll_seconds: float = 1.0) -> Starlette:
    return Gateway(routes, source, registry=registry, admin_token=admin_token,
                   feedback_log=feedback_log, poll_seconds=poll_seconds).app


__all__ = ["VARIANTS", "Gateway", "create_gateway"]
