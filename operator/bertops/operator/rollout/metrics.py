"""Per-variant observations for the rollout analysis, read from Prometheus metrics.

Two readers behind one interface (:class:`MetricsSource`, ``read() -> PerModel``):
:class:`ScrapeSource` fetches the text exposition of the gateway's ``/metrics`` (every
replica, summed), :class:`PrometheusSource` asks a Prometheus server's HTTP API for the
same series (optionally as ``increase`` over a window). The pure parsers
:func:`parse_gateway` and :func:`parse_server` (a model server's own ``/metrics``, for a
deployment without a gateway) carry the tests. The BertDeployment reconciler reads a
source, picks stable, canary and shadow with :func:`observations_for` and hands the
result to :func:`bertops.operator.rollout.state.decide`.

A candidate (the canary with the routes' ``compare``, or the shadow) also has paired
series: its label against stable's on the same texts (``paired_answers``, whose diagonal
is the agreement) and feedback scoring both on those texts (``paired_feedback``).

Counters are cumulative. The gateway labels every series with the model behind the
variant, so a new canary starts from zero; :meth:`Observation.since` subtracts a baseline
where a caller needs a window instead (e.g. a model rolled out a second time).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

GATEWAY = "bertops_gateway_"
SERVER = "bertops_server_"
INFERENCE = "inference"  # the gateway's endpoint label for /predict and OIP infer
SERVER_INFERENCE = ("predict", "infer")
K = TypeVar("K")  # a count's key: a label, an outcome, a pair of labels
PAIRED_OUTCOMES = ("both_correct", "candidate_only", "stable_only", "both_wrong")


@dataclass(frozen=True)
class Observation:
    """What one variant (one model behind it) did: cumulative counts since it started."""

    model: str | None = None
    requests: float = 0.0
    errors: float = 0.0
    latency_buckets: tuple[tuple[float, float], ...] = ()  # (upper bound s, cumulative)
    predictions: Mapping[str, float] = field(default_factory=dict)  # label -> count
    confidence_sum: float = 0.0
    confidence_count: float = 0.0
    feedback_correct: float = 0.0
    feedback_total: float = 0.0
    # A candidate's texts scored with stable's on the same texts: outcome (one of
    # PAIRED_OUTCOMES) -> count, and (stable's label, this model's label) -> count.
    paired_feedback: Mapping[str, float] = field(default_factory=dict)
    paired_answers: Mapping[tuple[str, str], float] = field(default_factory=dict)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests > 0 else None

    @property
    def latency_p95_ms(self) -> float | None:
        seconds = histogram_quantile(0.95, self.latency_buckets)
        return None if seconds is None else seconds * 1000

    @property
    def mean_confidence(self) -> float | None:
        return self.confidence_sum / self.confidence_count if self.confidence_count else None

    @property
    def feedback_accuracy(self) -> float | None:
        return self.feedback_correct / self.feedback_total if self.feedback_total else None

    @property
    def predicted(self) -> float:
        return sum(self.predictions.values())

    @property
    def paired_total(self) -> float:
        """Texts this model and stable both answered (the sum of ``paired_answers``)."""
        return sum(self.paired_answers.values())

    @property
    def agreement(self) -> float | None:
        """Share of paired texts on which this model and stable gave the same label."""
        total = self.paired_total
        same = sum(n for (stable, label), n in self.paired_answers.items() if stable == label)
        return same / total if total > 0 else None

    def since(self, baseline: Observation | None) -> Observation:
        """The difference to an earlier reading of the same counters (never negative: a
        restarted gateway resets its counters, and then the whole reading counts)."""
        if baseline is None or self.requests < baseline.requests:
            return self
        return _combine(self, baseline, -1.0)

    def plus(self, other: Observation) -> Observation:
        """Both readings together (two gateway replicas)."""
        return _combine(self, other, 1.0)


def _combine(a: Observation, b: Observation, sign: float) -> Observation:
    def num(x: float, y: float) -> float:
        return max(0.0, x + sign * y)

    bounds = sorted({le for le, _ in a.latency_buckets} | {le for le, _ in b.latency_buckets})
    buckets = tuple(
        (le, num(_cumulative(a.latency_buckets, le), _cumulative(b.latency_buckets, le)))
        for le in bounds
    )

    def merged(x: Mapping[K, float], y: Mapping[K, float]) -> dict[K, float]:
        return {k: num(x.get(k, 0.0), y.get(k, 0.0)) for k in set(x) | set(y)}

    return Observation(
        model=a.model or b.model,
        requests=num(a.requests, b.requests),
        errors=num(a.errors, b.errors),
        latency_buckets=buckets,
        predictions=merged(a.predictions, b.predictions),
        confidence_sum=num(a.confidence_sum, b.confidence_sum),
        confidence_count=num(a.confidence_count, b.confidence_count),
        feedback_correct=num(a.feedback_correct, b.feedback_correct),
        feedback_total=num(a.feedback_total, b.feedback_total),
        paired_feedback=merged(a.paired_feedback, b.paired_feedback),
        paired_answers=merged(a.paired_answers, b.paired_answers),
    )


def _cumulative(buckets: tuple[tuple[float, float], ...], le: float) -> float:
    """Cumulative count at bound ``le`` (the nearest bound below it when absent)."""
    value = 0.0
    for bound, count in buckets:
        if bound > le:
            break
        value = count
    return value


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets: linear
    interpolation inside the bucket holding the rank; the highest finite bound when the
    rank falls in +Inf. None without observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True)
class Observations:
    """The sides of an analysis; None where that side has no series."""

    stable: Observation | None
    canary: Observation | None
    shadow: Observation | None = None


PerModel = dict[tuple[str, str], Observation]  # (variant, model) -> what it did


class Accumulator:
    """Mutable per-(variant, model) sums while reading samples."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], dict[str, Any]] = defaultdict(
            lambda: {
                name: defaultdict(float)
                for name in ("buckets", "predictions", "paired_feedback", "paired_answers")
            }
        )

    def add(self, key: tuple[str, str], name: str, value: float) -> None:
        slot = self.values[key]
        slot[name] = slot.get(name, 0.0) + value

    def freeze(self) -> PerModel:
        out = {}
        for (variant, model), slot in self.values.items():
            out[(variant, model)] = Observation(
                model=model or None,
                requests=slot.get("requests", 0.0),
                errors=slot.get("errors", 0.0),
                latency_buckets=tuple(sorted(slot["buckets"].items())),
                predictions=dict(slot["predictions"]),
                confidence_sum=slot.get("confidence_sum", 0.0),
                confidence_count=slot.get("confidence_count", 0.0),
                feedback_correct=slot.get("feedback_correct", 0.0),
                feedback_total=slot.get("feedback_total", 0.0),
                paired_feedback=dict(slot["paired_feedback"]),
                paired_answers=dict(slot["paired_answers"]),
            )
        return out


def add_gateway_sample(
    acc: Accumulator, name: str, labels: Mapping[str, str], value: float
) -> None:
    """Fold one gateway sample (name without the ``bertops_gateway_`` prefix) into acc."""
    key = (labels.get("variant", ""), labels.get("model", ""))
    inference = labels.get("endpoint", INFERENCE) == INFERENCE
    if name == "requests_total" and inference:
        acc.add(key, "requests", value)
    elif name == "errors_total" and inference:
        acc.add(key, "errors", value)
    elif name == "request_latency_seconds_bucket" and inference:
        acc.values[key]["buckets"][float(labels["le"])] += value
    elif name == "predictions_total":
        acc.values[key]["predictions"][labels.get("label", "")] += value
    elif name == "prediction_confidence_sum":
        acc.add(key, "confidence_sum", value)
    elif name == "prediction_confidence_count":
        acc.add(key, "confidence_count", value)
    elif name == "feedback_total" and labels.get("outcome") in ("correct", "incorrect"):
        acc.add(key, "feedback_total", value)
        if labels["outcome"] == "correct":
            acc.add(key, "feedback_correct", value)
    elif name == "paired_answers_total":
        pair = (labels.get("stable_label", ""), labels.get("label", ""))
        acc.values[key]["paired_answers"][pair] += value
    elif name == "paired_feedback_total" and labels.get("outcome") in PAIRED_OUTCOMES:
        acc.values[key]["paired_feedback"][labels["outcome"]] += value


def parse_gateway(text: str) -> PerModel:
    """Observations per (variant, model) from the gateway's text exposition."""
    acc = Accumulator()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(GATEWAY):
                add_gateway_sample(acc, sample.name[len(GATEWAY) :], sample.labels, sample.value)
    return acc.freeze()


def parse_server(text: str) -> Observation:
    """One model server's own metrics as an observation (no feedback: only the gateway
    sees ground truth). Errors are 5xx answers to inference requests."""
    acc = Accumulator()
    model = ""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels, value = sample.labels, sample.value
            inference = labels.get("endpoint") in SERVER_INFERENCE
            if sample.name == SERVER + "model_info":
                model = labels.get("version") or labels.get("name") or ""
            elif sample.name == SERVER + "requests_total" and inference:
                acc.add(("", ""), "requests", value)
                if labels.get("status", "").startswith("5"):
                    acc.add(("", ""), "errors", value)
            elif sample.name == SERVER + "request_latency_seconds_bucket" and inference:
                acc.values[("", "")]["buckets"][float(labels["le"])] += value
            elif sample.name == SERVER + "predictions_total":
                acc.values[("", "")]["predictions"][labels.get("label", "")] += value
            elif sample.name == SERVER + "prediction_confidence_sum":
                acc.add(("", ""), "confidence_sum", value)
            elif sample.name == SERVER + "prediction_confidence_count":
                acc.add(("", ""), "confidence_count", value)
    found = acc.freeze().get(("", ""), Observation())
    return replace(found, model=model or None)


def merge(readings: Iterable[PerModel]) -> PerModel:
    """Several gateway replicas' readings as one."""
    out: PerModel = {}
    for reading in readings:
        for key, observation in reading.items():
            out[key] = out[key].plus(observation) if key in out else observation
    return out


def observations_for(
    per_model: PerModel, stable: str | None, canary: str | None, shadow: str | None = None
) -> Observations:
    """Pick the series of the models the rollout is about (an older canary's series may
    still be exported by the gateway; they are ignored). A shadow's are variant
    ``shadow``."""
    return Observations(
        stable=per_model.get(("stable", stable)) if stable else None,
        canary=per_model.get(("canary", canary)) if canary else None,
        shadow=per_model.get(("shadow", shadow)) if shadow else None,
    )


class MetricsSource(Protocol):
    def read(self) -> PerModel:
        """Observations per (variant, model); raises httpx.HTTPError or ValueError."""


@dataclass
class ScrapeSource:
    """The gateway's ``/metrics`` at each URL (one per replica), summed."""

    urls: tuple[str, ...]
    timeout: float = 5.0
    client: httpx.Client | None = None

    def read(self) -> PerModel:
        client = self.client or httpx.Client(timeout=self.timeout)
        try:
            readings = []
            for url in self.urls:
                response = client.get(url)
                response.raise_for_status()
                readings.append(parse_gateway(response.text))
            return merge(readings)
        finally:
            if self.client is None:
                client.close()
