"""Small helpers for the server tests: read one sample from Prometheus text, fire many
concurrent requests with httpx, and tiny stub backends for the gateway tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def samples(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples called ``name`` whose labels include ``labels``."""
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found.append(sample.value)
    return found


def metric(url: str, name: str, **labels: str) -> float:
    # A gateway's counters are on its metrics listener (conftest.GatewayUrl).
    source = getattr(url, "metrics", url)
    return sum(samples(httpx.get(source + "/metrics").text, name, **labels))


@dataclass
class Timed:
    status: int
    body: Any
    headers: httpx.Headers
    seconds: float


async def _fire(url: str, requests: Sequence[dict[str, Any]], concurrency: int) -> list[Timed]:
    limits = httpx.Limits(max_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def one(spec: dict[str, Any]) -> Timed:
            async with semaphore:
                started = time.perf_counter()
                response = await client.request(
                    spec.get("method", "POST"),
                    spec["path"],
                    json=spec.get("json"),
                    headers=spec.get("headers"),
                )
                elapsed = time.perf_counter() - started
                try:
                    body = response.json()
                except ValueError:
                    body = response.text
                client.cookies.clear()  # each spec stands for its own user
                return Timed(response.status_code, body, response.headers, elapsed)

        return await asyncio.gather(*(one(spec) for spec in requests))


def fire(url: str, requests: Sequence[dict[str, Any]], concurrency: int = 16) -> list[Timed]:
    """Send all requests with at most ``concurrency`` in flight; results in order."""
    return asyncio.run(_fire(url, requests, concurrency))


@dataclass
class Stub:
    """A stand-in model server answering every text with one label, after a delay."""

    name: str
    label: str
    delay: float = 0.0
    seen: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def predict(request: Request) -> JSONResponse:
            body = await request.json()
            self.seen.append(dict(request.headers))
            if self.delay:
                await asyncio.sleep(self.delay)
            return JSONResponse(
                {
                    "model": self.name,
                    "predictions": [{"label": self.label, "score": 0.9} for _ in body["texts"]],
                },
                headers={"x-request-id": request.headers.get("x-request-id", "")},
            )

        async def infer(request: Request) -> JSONResponse:
            body = await request.json()
            self.seen.append(dict(request.headers) | {"path": request.url.path})
            n = len(body["inputs"][0]["data"])
            return JSONResponse(
                {
                    "model_name": self.name,
                    "outputs": [
                        {
                            "name": "label",
                            "datatype": "BYTES",
                            "shape": [n],
                            "data": [self.label] * n,
                        },
                        {"name": "score", "datatype": "FP32", "shape": [n], "data": [0.8] * n},
                    ],
                }
            )

        return Starlette(
            routes=[
                Route("/predict", predict, methods=["POST"]),
                Route("/v2/models/{name}/infer", infer, methods=["POST"]),
            ]
        )


class GatewayUrl(str):
    """A gateway's public URL, knowing its metrics listener's (``metrics``)."""

    metrics: str


def serve_gateway(serve: Callable[..., Any], gateway: Any) -> GatewayUrl:
    """Start a Gateway's public app and its metrics app, each on a loopback port of its
    own (as ``bertops server gateway --metrics-port`` runs them); the public URL, with
    ``.metrics`` the metrics listener's (which :func:`metric` reads)."""
    url = GatewayUrl(serve(gateway.app).url)
    url.metrics = serve(gateway.metrics_app).url
    return url
