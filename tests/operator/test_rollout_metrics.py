"""Rollout observations from Prometheus metrics: the gateway's and a model server's real
metric sets rendered as text and parsed back (paired answers and feedback of a canary
and a shadow included), p95 from histogram buckets, windows and replicas, and the same
numbers through a Prometheus server's HTTP API (mocked)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from bertops.operator.rollout.metrics import (
    Observation,
    ScrapeSource,
    histogram_quantile,
    merge,
    observations_for,
    parse_gateway,
    parse_server,
)
from bertops.operator.rollout.prometheus import PrometheusSource, query
from bertops.server.gateway.metrics import GatewayMetrics
from bertops.server.metrics import ServerMetrics


def gateway_text() -> str:
    """What a gateway exports after some traffic: 100 stable and 40 canary inferences,
    health checks that must not count, an older canary's leftover series."""
    m = GatewayMetrics()
    for variant, model, n, bad, seconds, label, score in (
        ("stable", "v1", 100, 1, 0.02, "pos", 0.9),
        ("canary", "v2", 40, 4, 0.2, "neg", 0.6),
        ("canary", "v0", 10, 10, 1.0, "neg", 0.1),
    ):
        for i in range(n):
            code = "500" if i < bad else "200"
            m.requests.labels(variant, model, code, "inference").inc()
            if code == "500":
                m.errors.labels(variant, model, "status_500", "inference").inc()
            m.latency.labels(variant, model, "inference").observe(seconds)
            m.predictions.labels(variant, model, label if i % 4 else "neu").inc()
            m.confidence.labels(variant, model).observe(score)
    for _ in range(500):  # fast, successful health checks: ignored by the analysis
        m.requests.labels("canary", "v2", "200", "other").inc()
        m.latency.labels("canary", "v2", "other").observe(0.0005)
    m.errors.labels("canary", "v2", "unavailable", "other").inc()
    m.feedback.labels("canary", "v2", "correct").inc(6)
    m.feedback.labels("canary", "v2", "incorrect").inc(2)
    return generate_latest(m.registry).decode()


def test_gateway_text_becomes_per_variant_observations() -> None:
    found = observations_for(parse_gateway(gateway_text()), "v1", "v2")
    canary, stable = found.canary, found.stable
    assert canary is not None and stable is not None
    assert (canary.model, canary.requests, canary.errors) == ("v2", 40, 4)
    assert canary.error_rate == pytest.approx(0.1)
    assert stable.error_rate == pytest.approx(0.01)
    # All canary inferences took 0.2 s: p95 lies in the (0.15, 0.25] bucket.
    assert 150 < (canary.latency_p95_ms or 0) <= 250
    assert 15 < (stable.latency_p95_ms or 0) <= 25
    assert canary.predictions == {"neg": 30, "neu": 10}
    assert canary.mean_confidence == pytest.approx(0.6)
    assert (canary.feedback_correct, canary.feedback_total) == (6, 8)
    assert stable.feedback_accuracy is None
    assert observations_for(parse_gateway(gateway_text()), "v1", "v9").canary is None


def paired_text() -> str:
    """A gateway's paired series: the canary (compare) and a shadow against stable v1."""
    m = GatewayMetrics()
    for stable_label, label, n in (("pos", "pos", 30), ("neg", "neg", 6), ("pos", "neg", 4)):
        m.paired_answers.labels("canary", "v2", "v1", stable_label, label).inc(n)
    m.paired_answers.labels("shadow", "v3", "v1", "pos", "neu").inc(5)
    for outcome, n in (("both_correct", 7), ("candidate_only", 2), ("stable_only", 1)):
        m.paired_feedback.labels("canary", "v2", "v1", outcome).inc(n)
    m.paired_feedback.labels("shadow", "v3", "v1", "both_wrong").inc(3)
    m.requests.labels("shadow", "v3", "200", "inference").inc(5)
    m.feedback.labels("stable", "v1", "correct").inc(4)  # the users' answers were stable's
    return generate_latest(m.registry).decode()


def test_paired_series_become_fields_of_the_candidates() -> None:
    found = observations_for(parse_gateway(paired_text()), "v1", "v2", "v3")
    canary, shadow, stable = found.canary, found.shadow, found.stable
    assert canary is not None and shadow is not None and stable is not None
    assert canary.paired_answers == {("pos", "pos"): 30, ("neg", "neg"): 6, ("pos", "neg"): 4}
    assert (canary.paired_total, canary.agreement) == (40, pytest.approx(0.9))
    assert canary.paired_feedback == {"both_correct": 7, "candidate_only": 2, "stable_only": 1}
    assert (shadow.model, shadow.requests, shadow.agreement) == ("v3", 5, 0.0)
    assert shadow.paired_feedback == {"both_wrong": 3}
    assert (stable.paired_answers, stable.agreement, stable.feedback_total) == ({}, None, 4)
    assert observations_for(parse_gateway(paired_text()), "v1", "v2").shadow is None


def test_since_and_plus_combine_paired_fields() -> None:
    early = Observation(
        "v2",
        10,
        paired_feedback={"both_correct": 2},
        paired_answers={("pos", "pos"): 8, ("pos", "neg"): 2},
    )
    late = Observation(
        "v2",
        30,
        paired_feedback={"both_correct": 5, "stable_only": 1},
        paired_answers={("pos", "pos"): 10, ("pos", "neg"): 10, ("neg", "neg"): 5},
    )
    window = late.since(early)
    assert window.paired_feedback == {"both_correct": 3, "stable_only": 1}
    assert window.paired_answers == {("pos", "pos"): 2, ("pos", "neg"): 8, ("neg", "neg"): 5}
    assert (window.paired_total, window.agreement) == (15, pytest.approx(7 / 15))
    both = early.plus(late)
    assert both.paired_feedback == {"both_correct": 7, "stable_only": 1}
    assert both.paired_answers[("pos", "neg")] == 12 and both.paired_total == 35
    assert Observation().agreement is None and Observation().paired_total == 0


def test_server_text_becomes_an_observation() -> None:
    m = ServerMetrics()
    m.model.info({"name": "sentiment", "version": "tiny-v1"})
    for status in ("200",) * 9 + ("503",):
        m.requests.labels("predict", status).inc()
        m.request_latency.labels("predict").observe(0.01)
    m.requests.labels("health", "200").inc(100)
    m.predictions.labels("pos").inc(9)
    m.confidence.observe(0.8)
    found = parse_server(generate_latest(m.registry).decode())
    assert (found.model, found.requests, found.errors) == ("tiny-v1", 10, 1)
    assert found.predictions == {"pos": 9} and found.mean_confidence == pytest.approx(0.8)


QUANTILES = [
    ("empty", [], None),
    ("no observations", [(0.1, 0), (float("inf"), 0)], None),
    ("interpolated in the first bucket", [(0.1, 100), (float("inf"), 100)], 0.095),
    ("interpolated between bounds", [(0.1, 50), (0.2, 100), (float("inf"), 100)], 0.19),
    ("rank in +Inf: the highest finite bound", [(0.1, 10), (float("inf"), 100)], 0.1),
]


@pytest.mark.parametrize(
    ("buckets", "expected"), [q[1:] for q in QUANTILES], ids=[q[0] for q in QUANTILES]
)
def test_histogram_quantile(buckets: list[tuple[float, float]], expected: float | None) -> None:
    found = histogram_quantile(0.95, buckets)
    assert found == (pytest.approx(expected) if expected is not None else None)


def test_since_and_plus() -> None:
    early = Observation("v2", 10, 1, ((0.1, 10), (float("inf"), 10)), {"a": 10}, 5, 10, 1, 2)
    late = Observation(
        "v2", 30, 2, ((0.1, 20), (float("inf"), 30)), {"a": 20, "b": 10}, 20, 30, 3, 4
    )
    window = late.since(early)
    assert (window.requests, window.errors, window.predictions) == (20, 1, {"a": 10, "b": 10})
    assert window.latency_buckets == ((0.1, 10), (float("inf"), 20))
    assert (window.feedback_correct, window.feedback_total) == (2, 2)
    assert early.since(late) is early  # counters went down: the gateway restarted
    both = merge([{("canary", "v2"): early}, {("canary", "v2"): late}])
    assert both[("canary", "v2")].requests == 40


def test_scrape_source_sums_replicas() -> None:
    text = gateway_text()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text=text))
    source = ScrapeSource(
        ("http://gw-0/metrics", "http://gw-1/metrics"), client=httpx.Client(transport=transport)
    )
    assert source.read()[("canary", "v2")].requests == 80


def prometheus_answer(query_text: str) -> dict[str, Any]:
    """A Prometheus instant-vector answer for the gateway's series."""
    rows: list[tuple[dict[str, str], str]] = []
    vm = {"variant": "canary", "model": "v2"}
    if "requests_total" in query_text:
        rows = [(vm, "40")]
    elif "errors_total" in query_text:
        rows = [(vm, "4")]
    elif "latency_seconds_bucket" in query_text:
        rows = [(vm | {"le": "0.1"}, "0"), (vm | {"le": "0.25"}, "40"), (vm | {"le": "+Inf"}, "40")]
    elif "predictions_total" in query_text:
        rows = [(vm | {"label": "neg"}, "30"), (vm | {"label": "pos"}, "NaN")]
    elif "feedback_total" in query_text:
        rows = [(vm | {"outcome": "correct"}, "6"), (vm | {"outcome": "incorrect"}, "2")]
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": labels, "value": [1700000000, value]} for labels, value in rows],
        },
    }


def test_prometheus_source_reads_the_same_numbers() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/prom/api/v1/query"
        seen.append(request.url.params["query"])
        return httpx.Response(200, json=prometheus_answer(seen[-1]))

    source = PrometheusSource(
        "http://prom:9090/prom/",
        {"namespace": "ml"},
        window="10m",
        client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    canary = source.read()[("canary", "v2")]
    assert (canary.requests, canary.errors, canary.predictions) == (40, 4, {"neg": 30})
    assert 100 < (canary.latency_p95_ms or 0) <= 250
    assert canary.feedback_accuracy == pytest.approx(0.75)
    assert seen[0] == (
        "sum by (variant, model) (increase(bertops_gateway_requests_total"
        '{endpoint="inference",namespace="ml"}[10m]))'
    )


def test_prometheus_errors_are_raised() -> None:
    answer = {"status": "error", "error": "bad query"}
    client = httpx.Client(
        transport=httpx.MockTransport(lambda _r: httpx.Response(200, content=json.dumps(answer)))
    )
    with pytest.raises(ValueError, match="bad query"):
        PrometheusSource("http://prom", client=client).read()
    assert 'x="a\\"b"' in query("feedback_total", {"x": 'a"b'})
