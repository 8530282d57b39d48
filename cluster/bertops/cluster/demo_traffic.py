"""The closed-loop demo's traffic: texts sent one per request through a BertDeployment's
gateway, each answer recorded, and (when true labels are given) ground truth posted back
as feedback, as a client with labelled outcomes would.

Called by the demo (:mod:`bertops.cluster.demo`) for the normal and the shifted phase;
:func:`summarize` and the records feed :mod:`bertops.cluster.demo_report`. Requests go
to ``POST {endpoint}/predict`` (``{"texts": [text]}``; the answer names the ``model`` and
its ``predictions``) and feedback to ``POST {endpoint}/feedback`` (``{"requestId",
"label"}``, with the ``x-request-id`` the gateway issued). The variant (stable/canary)
comes from the ``x-bertops-variant`` header when the gateway exposes it; otherwise the
caller maps the answering model to a variant.

Bounded on purpose: loopback endpoints only (the demo's own gateway, never someone
else's service), or with :class:`Gateway` ``netns``, a Service or pod address of the
embedded node, sent from a thread inside the node's network namespace (the only place
those addresses exist); at most ``MAX_RATE`` requests a second and ``MAX_CONCURRENCY``
in flight.
"""

from __future__ import annotations

import asyncio
import ipaddress
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from bertops.cluster.node.configs import POD_SUBNET, SERVICE_SUBNET
from bertops.cluster.node.netns import call_inside

MAX_RATE = 50.0
MAX_CONCURRENCY = 16
REQUEST_ID_HEADER = "x-request-id"
VARIANT_HEADER = "x-bertops-variant"
MODEL_HEADER = "x-bertops-model"
NODE_NETWORKS = (SERVICE_SUBNET, POD_SUBNET)
T = TypeVar("T")


@dataclass
class Record:
    """One request through the gateway and what became of it."""

    at: float  # wall-clock seconds (time.time) when the request was sent
    phase: str
    index: int  # position of the text in the list sent
    status: int | None  # HTTP status; None when no answer came
    latency_s: float
    variant: str | None = None
    model: str | None = None
    predicted: str | None = None
    label: str | None = None  # the true label, when known
    correct: bool | None = None
    request_id: str | None = None
    error: str | None = None
    feedback: str | None = None  # "accepted", "duplicate" or why it was refused

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_loopback(endpoint: str, in_node: bool = False) -> str:
    """The endpoint without a trailing slash, or ValueError when it is not on loopback
    (with ``in_node``: not a Service or pod address of the embedded node)."""
    parts = urlsplit(endpoint)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"{endpoint!r} is not an http(s) URL")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    loopback = address.is_loopback if address else host == "localhost"
    if in_node and address and any(address in ipaddress.ip_network(n) for n in NODE_NETWORKS):
        return endpoint.rstrip("/")
    if not loopback:
        where = "loopback or the node's Service and pod addresses" if in_node else "loopback"
        raise ValueError(f"the demo sends traffic only to {where}, not {host}")
    return endpoint.rstrip("/")


@dataclass(frozen=True)
class Gateway:
    """Where the demo's traffic goes: a gateway on loopback (``make demo``), or the
    gateway Service's address sent from inside the node's network namespace ``netns``
    (``make demo-node``)."""

    endpoint: str
    netns: str | None = None
    feedback_token: str | None = None  # the demo's labeler (serving.feedback credentials)

    def run(self, work: Callable[[], T]) -> T:
        """work() where this gateway's address can be reached."""
        return work() if self.netns is None else call_inside(self.netns, work)

    def send(
        self, texts: Sequence[str], labels: Sequence[str] | None = None, **options: Any
    ) -> list[Record]:
        """:func:`send` to this gateway."""
        in_node = self.netns is not None
        options.setdefault("feedback_token", self.feedback_token)
        return self.run(lambda: send(self.endpoint, texts, labels, in_node=in_node, **options))


def _answer(record: Record, response: httpx.Response) -> None:
    record.request_id = response.headers.get(REQUEST_ID_HEADER)
    record.variant = response.headers.get(VARIANT_HEADER)
    record.model = response.headers.get(MODEL_HEADER)
    if response.status_code != 200:
        record.error = f"HTTP {response.status_code}: {response.text[:200]}"
        return
    try:
        body = response.json()
        record.model = record.model or body.get("model")
        record.request_id = record.request_id or body.get("requestId")
        record.predicted = body["predictions"][0]["label"]
    except (ValueError, KeyError, IndexError, TypeError) as error:
        record.error = f"unexpected answer: {type(error).__name__}: {error}"
        return
    if record.label is not None:
        record.correct = record.predicted == record.label


async def _feedback(
    client: httpx.AsyncClient, base: str, record: Record, headers: dict[str, str]
) -> None:
    if record.request_id is None or record.label is None or record.predicted is None:
        return
    try:
        response = await client.post(
            f"{base}/feedback",
            json={"requestId": record.request_id, "label": record.label},
            headers=headers,
        )
    except httpx.HTTPError as error:
        record.feedback = f"failed: {type(error).__name__}"
        return
    if response.status_code != 200:
        record.feedback = f"HTTP {response.status_code}"
        return
    body = response.json()
    record.feedback = "accepted" if body.get("accepted") else "duplicate"


async def _one(
    client: httpx.AsyncClient,
    base: str,
    text: str,
    record: Record,
    feedback: dict[str, str] | None,
    clock: Callable[[], float],
) -> None:
    started = time.perf_counter()
    record.at = clock()
    try:
        response = await client.post(f"{base}/predict", json={"texts": [text]})
    except httpx.HTTPError as error:
        record.latency_s = time.perf_counter() - started
        record.error = f"{type(error).__name__}: {error}"
        return
    record.latency_s = time.perf_counter() - started
    record.status = response.status_code
    _answer(record, response)
    if feedback is not None:
        await _feedback(client, base, record, feedback)


async def _send(
    base: str,
    texts: Sequence[str],
    labels: Sequence[str] | None,
    *,
    feedback: dict[str, str] | None,
    phase: str,
    rate: float,
    concurrency: int,
    request_timeout: float,
    clock: Callable[[], float],
    transport: httpx.AsyncBaseTransport | None,
) -> list[Record]:
    records = [
        Record(
            at=0.0,
            phase=phase,
            index=i,
            status=None,
            latency_s=0.0,
            label=labels[i] if labels else None,
        )
        for i in range(len(texts))
    ]
    gate = asyncio.Semaphore(concurrency)
    interval = 1.0 / rate

    async def bounded(i: int) -> None:
        async with gate:
            await _one(client, base, texts[i], records[i], feedback, clock)

    async with httpx.AsyncClient(timeout=request_timeout, transport=transport) as client:
        tasks = []
        for i in range(len(texts)):
            tasks.append(asyncio.create_task(bounded(i)))
            await asyncio.sleep(interval)  # pace the starts: at most `rate` a second
        await asyncio.gather(*tasks)
    return records


def send(
    endpoint: str,
    texts: Sequence[str],
    labels: Sequence[str] | None = None,
    *,
    feedback: bool = True,
    phase: str = "",
    rate: float = 10.0,
    concurrency: int = 4,
    timeout: float = 30.0,
    clock: Callable[[], float] = time.time,
    transport: httpx.AsyncBaseTransport | None = None,
    in_node: bool = False,
    feedback_token: str | None = None,
) -> list[Record]:
    """Send each text as one ``/predict`` request (paced at ``rate`` a second, at most
    ``concurrency`` in flight) and, with ``labels`` and ``feedback``, post each true
    label back (as the client ``feedback_token`` names, when given). One
    :class:`Record` per text, in the order given. Runs its own event
    loop: call it from synchronous code (the demo's stages)."""
    base = check_loopback(endpoint, in_node)
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"rate must be in (0, {MAX_RATE}] requests a second")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be in [1, {MAX_CONCURRENCY}]")
    return asyncio.run(
        _send(
            base,
            texts,
            labels,
            feedback=(
                ({"authorization": f"Bearer {feedback_token}"} if feedback_token else {})
                if feedback and labels is not None
                else None
            ),
            phase=phase,
            rate=rate,
            concurrency=concurrency,
            request_timeout=timeout,
            clock=clock,
            transport=transport,
        )
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def summarize(
    records: Sequence[Record], key: Callable[[Record], str] = lambda r: r.model or "none"
) -> dict[str, dict[str, float]]:
    """Per group (default: the answering model): requests, error rate, latency p50/p95
    (seconds) and accuracy against the true labels (NaN when none were known)."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(key(record), []).append(record)
    out = {}
    for name, group in sorted(groups.items()):
        latencies = [r.latency_s for r in group if r.error is None]
        judged = [r.correct for r in group if r.correct is not None]
        out[name] = {
            "requests": float(len(group)),
            "errorRate": sum(r.error is not None for r in group) / len(group),
            "latencyP50": statistics.median(latencies) if latencies else 0.0,
            "latencyP95": _percentile(latencies, 0.95),
            "accuracy": sum(judged) / len(judged) if judged else float("nan"),
        }
    return out
