"""The demo's traffic sender against a fake gateway (httpx.MockTransport): one record per
text, the answering model and variant, correctness, feedback with the issued request id,
errors, pacing bounds and the loopback-only rule."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import pytest

from bertops.cluster import demo_traffic

URL = "http://127.0.0.1:8080/"


class FakeGateway:
    """Answers "positive" for texts containing "good", else "negative"; text "boom" is a
    500; takes feedback once per request id it issued."""

    def __init__(self) -> None:
        self.issued: dict[str, str] = {}
        self.feedback: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/feedback":
            self.feedback.append(body)
            if body["requestId"] not in self.issued:
                return httpx.Response(404, json={"error": "unknown"})
            return httpx.Response(200, json={"accepted": 1, "duplicates": 0})
        assert request.url.path == "/predict"
        text = body["texts"][0]
        if text == "boom":
            return httpx.Response(500, json={"error": "the model server is unavailable"})
        rid = f"r{len(self.issued)}"
        variant = "canary" if "canary" in text else "stable"
        self.issued[rid] = variant
        label = "positive" if "good" in text else "negative"
        return httpx.Response(
            200,
            headers={"x-request-id": rid, "x-bertops-variant": variant},
            json={"model": f"m-{variant}", "requestId": rid, "predictions": [{"label": label}]},
        )


@pytest.mark.parametrize(
    ("texts", "labels", "feedback", "expect"),
    [
        (
            ["good day", "bad day", "good canary"],
            ["positive", "positive", "positive"],
            True,
            [
                (True, "stable", "accepted"),
                (False, "stable", "accepted"),
                (True, "canary", "accepted"),
            ],
        ),
        (["good", "bad"], None, True, [(None, "stable", None), (None, "stable", None)]),
        (["good"], ["positive"], False, [(True, "stable", None)]),
        (
            ["boom", "good"],
            ["negative", "positive"],
            True,
            [(None, None, None), (True, "stable", "accepted")],
        ),
    ],
)
def test_send_records_each_request(
    texts: list[str], labels: list[str] | None, feedback: bool, expect: list[tuple[Any, ...]]
) -> None:
    gateway = FakeGateway()
    records = demo_traffic.send(
        URL,
        texts,
        labels,
        feedback=feedback,
        phase="p",
        rate=50,
        transport=httpx.MockTransport(gateway),
    )
    assert [(r.correct, r.variant, r.feedback) for r in records] == expect
    assert [r.index for r in records] == list(range(len(texts)))
    assert all(r.phase == "p" and r.latency_s >= 0 and r.at > 0 for r in records)
    sent = [f["requestId"] for f in gateway.feedback]
    assert sent == [r.request_id for r in records if r.feedback]  # the gateway's own ids
    for record in records:
        if record.status == 500:
            assert record.error and record.error.startswith("HTTP 500") and record.model is None
        else:
            assert record.model == f"m-{record.variant}" and record.error is None


def test_connection_errors_are_records_not_exceptions() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    records = demo_traffic.send(URL, ["a"], ["neutral"], transport=httpx.MockTransport(refuse))
    assert records[0].status is None and "ConnectError" in (records[0].error or "")


@pytest.mark.parametrize(
    ("endpoint", "kwargs", "match"),
    [
        ("http://10.0.0.5:80", {}, "loopback"),
        ("http://example.com", {}, "loopback"),
        ("ftp://127.0.0.1", {}, "http"),
        (URL, {"rate": 1000}, "rate"),
        (URL, {"concurrency": 100}, "concurrency"),
        (URL, {"labels": ["a", "b"]}, "labels"),
    ],
)
def test_bounds(endpoint: str, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        demo_traffic.send(endpoint, ["a"], **kwargs)


def test_localhost_and_ipv6_loopback_are_allowed() -> None:
    assert demo_traffic.check_loopback("http://localhost:1/") == "http://localhost:1"
    assert demo_traffic.check_loopback("http://[::1]:1") == "http://[::1]:1"


def test_summarize_per_model() -> None:
    rec = demo_traffic.Record
    records = [
        rec(at=0, phase="s", index=0, status=200, latency_s=0.1, model="a", correct=True),
        rec(at=0, phase="s", index=1, status=200, latency_s=0.3, model="a", correct=False),
        rec(at=0, phase="s", index=2, status=500, latency_s=0.2, model="b", error="HTTP 500"),
    ]
    table = demo_traffic.summarize(records)
    assert table["a"]["requests"] == 2 and table["a"]["accuracy"] == 0.5
    assert table["a"]["latencyP50"] == pytest.approx(0.2) and table["a"]["errorRate"] == 0
    assert table["b"]["errorRate"] == 1 and math.isnan(table["b"]["accuracy"])
