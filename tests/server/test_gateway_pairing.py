"""Paired answers over real HTTP on loopback: with ``compare`` the gateway asks stable,
in the background, what the canary answered, and a shadow's answers are paired with
stable's; each text counts the candidate's label against stable's, and feedback on a
paired text scores both models (both_correct, candidate_only, stable_only, both_wrong).
Pair calls are not stable's user traffic, never delay callers and are dropped over the
background cap."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bertops.server.gateway.access import FeedbackAccess
from bertops.server.gateway.app import Gateway
from bertops.server.gateway.pairs import Pair
from bertops.server.gateway.routes import Backend, Routes
from bertops.server.gateway.served import Served, ServedStore
from tests.server.conftest import LiveServer
from tests.server.helpers import metric, serve_gateway

LABELS = ["positive", "negative", "neutral"]
FORCE = "x-bertops-variant"
TEXTS = ["a", "b", "c", "d"]
# Stable's and the candidate's labels of TEXTS, and the truth that makes text i come out
# as OUTCOMES[i].
STABLE = {"a": "positive", "b": "positive", "c": "negative", "d": "neutral"}
CANDIDATE = {"a": "positive", "b": "negative", "c": "positive", "d": "negative"}
TRUTH = ["positive", "negative", "negative", "positive"]
OUTCOMES = ["both_correct", "candidate_only", "stable_only", "both_wrong"]


@dataclass
class Judge:
    """A stand-in model server labelling each text by a table, after a delay."""

    name: str
    answers: dict[str, str]
    delay: float = 0.0
    seen: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def predict(request: Request) -> JSONResponse:
            texts = (await request.json())["texts"]
            self.seen.append(dict(request.headers))
            if self.delay:
                await asyncio.sleep(self.delay)
            predictions = [{"label": self.answers[t], "score": 0.9} for t in texts]
            return JSONResponse({"model": self.name, "predictions": predictions})

        return Starlette(routes=[Route("/predict", predict, methods=["POST"])])


def table(stable: str, **document: object) -> Routes:
    for variant, name in (("canary", "v2"), ("shadow", "v3")):
        if variant in document:
            document[variant] = {"name": name, "url": document[variant], "labels": LABELS}
    return Routes.model_validate(
        {"stable": {"name": "v1", "url": stable, "labels": LABELS}, **document}
    )


def wait_metric(gateway: str, name: str, wanted: float, **labels: str) -> None:
    deadline = time.monotonic() + 30  # a bound for failing, not a speed requirement
    while metric(gateway, name, **labels) < wanted:
        assert time.monotonic() < deadline, f"{name} {labels} stayed below {wanted}"
        time.sleep(0.05)


def ask(client: httpx.Client, n: int, **headers: str) -> list[httpx.Response]:
    answers = [client.post("/predict", json={"texts": TEXTS}, headers=headers) for _ in range(n)]
    assert {a.status_code for a in answers} == {200}
    return answers


def paired(gateway: str, variant: str, model: str) -> dict[tuple[str, str], float]:
    """(stable label, candidate label) -> count, for the texts of TEXTS."""
    return {
        (STABLE[t], CANDIDATE[t]): metric(
            gateway,
            "bertops_gateway_paired_answers_total",
            variant=variant,
            model=model,
            stable_model="v1",
            stable_label=STABLE[t],
            label=CANDIDATE[t],
        )
        for t in TEXTS
    }


def paired_feedback(gateway: str, variant: str, model: str) -> dict[str, float]:
    return {
        outcome: metric(
            gateway,
            "bertops_gateway_paired_feedback_total",
            variant=variant,
            model=model,
            stable_model="v1",
            outcome=outcome,
        )
        for outcome in OUTCOMES
    }


def test_compare_pairs_canary_answers_with_stable(serve: Callable[..., LiveServer]) -> None:
    stable, canary = Judge("v1", STABLE), Judge("v2", CANDIDATE)
    routes = table(
        serve(stable.app()).url, canary=serve(canary.app()).url, canaryWeight=50, compare=True
    )
    gateway = serve_gateway(
        serve, Gateway(routes, expose_headers=True, feedback_access=FeedbackAccess.open())
    )
    with httpx.Client(base_url=gateway) as client:
        answers = ask(client, 40)
        by_variant: dict[str, list[str]] = {"stable": [], "canary": []}
        for answer in answers:
            by_variant[answer.headers[FORCE]].append(answer.headers["x-request-id"])
        served, pairs = len(by_variant["stable"]), len(by_variant["canary"])
        assert served and pairs
        wait_metric(gateway, "bertops_gateway_pair_requests_total", pairs, outcome="ok")
        # Every text of every canary answer, against stable's label on the same text.
        assert paired(gateway, "canary", "v2") == dict.fromkeys(
            zip(STABLE.values(), CANDIDATE.values(), strict=True), pairs
        )
        # Pair calls reached stable (same request id, marked) but are not its traffic.
        asked = [h for h in stable.seen if h[FORCE] == "pair"]
        assert sorted(h["x-request-id"] for h in asked) == sorted(by_variant["canary"])
        assert len(stable.seen) == served + pairs
        assert metric(gateway, "bertops_gateway_requests_total", variant="stable") == served
        assert metric(gateway, "bertops_gateway_predictions_total", variant="stable") == 4 * served
        assert metric(gateway, "bertops_gateway_paired_answers_total", variant="stable") == 0

        truth = [{"requestId": rid, "labels": TRUTH} for rid in by_variant["canary"]]
        truth.append({"requestId": by_variant["stable"][0], "labels": TRUTH})
        accepted = client.post("/feedback", json=truth).json()
        assert accepted == {"accepted": 4 * (pairs + 1), "duplicates": 0}
    assert paired_feedback(gateway, "canary", "v2") == dict.fromkeys(OUTCOMES, pairs)
    assert metric(gateway, "bertops_gateway_paired_feedback_total") == 4 * pairs  # stable's: none
    # The per-variant feedback counts as before: the canary got texts a and b right.
    assert metric(gateway, "bertops_gateway_feedback_accuracy", variant="canary") == 0.5
    assert metric(gateway, "bertops_gateway_feedback_total", variant="stable") == 4


def test_pair_calls_never_delay_callers_and_are_dropped_over_the_cap(
    serve: Callable[..., LiveServer],
) -> None:
    stable = Judge("v1", STABLE, delay=2.0)
    canary = serve(Judge("v2", CANDIDATE).app()).url
    routes = table(serve(stable.app()).url, canary=canary, canaryWeight=100, compare=True)
    gateway = serve_gateway(
        serve, Gateway(routes, max_shadow_in_flight=1, feedback_access=FeedbackAccess.open())
    )
    with httpx.Client(base_url=gateway) as client:
        started = time.perf_counter()
        rid = ask(client, 3)[0].headers["x-request-id"]
        assert time.perf_counter() - started < 2.0  # stable's 2 s were never waited for
        # Feedback before the pair answer: scored for the canary now, paired on arrival.
        early = client.post("/feedback", json={"requestId": rid, "labels": TRUTH}).json()
        assert early == {"accepted": 4, "duplicates": 0}
    outcomes = {"ok": 1, "dropped": 2, "error": 0}  # one in flight at a time
    wait_metric(gateway, "bertops_gateway_pair_requests_total", 1, outcome="ok")
    for outcome, count in outcomes.items():
        assert metric(gateway, "bertops_gateway_pair_requests_total", outcome=outcome) == count
    assert metric(gateway, "bertops_gateway_paired_answers_total") == 4
    assert metric(gateway, "bertops_gateway_paired_feedback_total") == 4
    assert metric(gateway, "bertops_gateway_feedback_total", variant="canary") == 4


def test_shadow_answers_are_paired_with_stable(serve: Callable[..., LiveServer]) -> None:
    stable, shadow = Judge("v1", STABLE), Judge("v3", CANDIDATE)
    canary = serve(Judge("v2", STABLE).app()).url
    routes = table(
        serve(stable.app()).url,
        shadow=serve(shadow.app()).url,
        canary=canary,
        canaryWeight=0,
        overrideHeader=FORCE,
    )
    gateway = serve_gateway(serve, Gateway(routes, feedback_access=FeedbackAccess.open()))
    with httpx.Client(base_url=gateway) as client:
        ids = [a.headers["x-request-id"] for a in ask(client, 10)]
        # Mirrored too, but the canary answered it: no stable answer to pair with.
        ask(client, 1, **{FORCE: "canary"})
        wait_metric(gateway, "bertops_gateway_shadow_requests_total", 11, outcome="ok")
        assert paired(gateway, "shadow", "v3") == dict.fromkeys(
            zip(STABLE.values(), CANDIDATE.values(), strict=True), 10
        )
        assert metric(gateway, "bertops_gateway_paired_answers_total") == 40
        truth = [{"requestId": rid, "labels": TRUTH} for rid in ids]
        assert client.post("/feedback", json=truth).json() == {"accepted": 40, "duplicates": 0}
    assert paired_feedback(gateway, "shadow", "v3") == dict.fromkeys(OUTCOMES, 10)
    # Stable answered the users: its own feedback counts as before (texts a and c right).
    assert metric(gateway, "bertops_gateway_feedback_accuracy", variant="stable") == 0.5
    assert metric(gateway, "bertops_gateway_feedback_total", variant="shadow") == 0
    # The shadow's latency stays in the per-variant histogram, for a latency ratio.
    assert metric(gateway, "bertops_gateway_request_latency_seconds_count", variant="shadow") == 11


def test_attached_pairs_count_in_the_store_budget() -> None:
    now = [0.0]
    store = ServedStore(max_bytes=10_000, window_seconds=60, clock=lambda: now[0])
    backend = Backend(name="v1", url="http://a")
    store.add("id-1", Served("stable", backend, ("positive",) * 10, now[0]))
    alone = store.bytes
    pair = Pair("shadow", "v3", "v1", ("negative",) * 10, ("positive",) * 10)
    assert store.attach("id-1", pair) == {}  # remembered; no feedback came first
    assert store.bytes == alone + pair.cost and pair.cost > 20 * 60
    assert store.attach("unknown", pair) is None
    assert pair.outcome(9, "negative") == "candidate_only" and pair.outcome(10, "x") is None
    big = Pair("shadow", "v3", "v1", ("n" * 100,) * 25, ("p" * 100,) * 25)
    store.add("id-2", Served("stable", backend, ("positive",), now[0]))
    assert store.attach("id-2", big) is not None  # over the budget: the oldest answers go first
    assert store.get("id-1") is None and store.bytes <= store.max_bytes
    now[0] = 120
    assert store.get("id-2") is None and store.bytes == 0  # expired: nothing left counted


@pytest.mark.parametrize("compare", [False, True])
def test_no_pair_calls_without_compare(serve: Callable[..., LiveServer], compare: bool) -> None:
    stable = Judge("v1", STABLE)
    canary = serve(Judge("v2", CANDIDATE).app()).url
    routes = table(serve(stable.app()).url, canary=canary, canaryWeight=100, compare=compare)
    gateway = serve_gateway(serve, Gateway(routes, feedback_access=FeedbackAccess.open()))
    with httpx.Client(base_url=gateway) as client:
        ask(client, 3)
    if compare:
        wait_metric(gateway, "bertops_gateway_pair_requests_total", 3, outcome="ok")
    else:
        time.sleep(0.2)  # time a pair call would have had to reach stable
    assert len(stable.seen) == (3 if compare else 0)


def test_feedback_before_the_pair_answer_is_scored_when_it_arrives(
    serve: Callable[..., LiveServer],
) -> None:
    """A client that labels each answer at once beats the background call to stable:
    its feedback waits on the answer and is scored on both models when the pair lands."""
    stable = Judge("v1", STABLE, delay=1.5)  # the pair call takes a while
    canary = Judge("v2", CANDIDATE)
    routes = table(
        serve(stable.app()).url, canary=serve(canary.app()).url, canaryWeight=100, compare=True
    )
    gateway = serve_gateway(serve, Gateway(routes, feedback_access=FeedbackAccess.open()))
    with httpx.Client(base_url=gateway) as client:
        ids = [a.headers["x-request-id"] for a in ask(client, 5)]
        accepted = client.post(
            "/feedback", json=[{"requestId": rid, "labels": TRUTH} for rid in ids]
        ).json()
        assert accepted["accepted"] == 5 * len(TEXTS)
        assert sum(paired_feedback(gateway, "canary", "v2").values()) == 0  # not yet
        wait_metric(gateway, "bertops_gateway_pair_requests_total", 5, outcome="ok")
    assert paired_feedback(gateway, "canary", "v2") == dict.fromkeys(OUTCOMES, 5)
