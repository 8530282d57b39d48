"""The gateway over real HTTP on loopback: weighted and sticky canary routing, header
override, route changes under load, shadow traffic, feedback, a backend that is down, and
the gateway in front of a real model server (request ids reach the prediction log)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from statistics import median

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from bertops.server.app import ServerSettings, create_app
from bertops.server.cli import app as cli
from bertops.server.gateway.app import create_gateway
from bertops.server.gateway.routes import Routes, RouteSource, bucket, choose_variant
from bertops.server.model import ServedModel
from tests.server.conftest import LiveServer, wait_ready
from tests.server.helpers import Stub, fire, metric

TOKEN = "s3cret"


def routes(stable: str, canary: str | None = None, weight: float = 0,
           shadow: str | None = None, **extra: object) -> Routes:
    document: dict[str, object] = {"stable": {"name": "v1", "url": stable}, **extra}
    if canary:
        document |= {"canary": {"name": "v2", "url": canary}, "canaryWeight": weight}
    if shadow:
        document["shadow"] = {"name": "v3", "url": shadow}
    return Routes.model_validate(document)


def predict(key: str | None = None, **headers: str) -> dict[str, object]:
    if key is not None:
        headers["x-bertops-key"] = key
    return {"path": "/predict", "json": {"texts": ["hello"]}, "headers": headers}


@pytest.fixture
def stubs(serve: Callable[..., LiveServer]) -> dict[str, tuple[Stub, str]]:
    made = {"stable": Stub("v1", "positive"), "canary": Stub("v2", "negative"),
            "other": Stub("v1b", "positive"), "shadow": Stub("v3", "neutral", delay=0.5)}
    return {name: (stub, serve(stub.app()).url) for name, stub in made.items()}


def test_choose_variant_is_weighted_sticky_and_monotone() -> None:
    table = routes("http://a", "http://b", weight=10)
    keys = [f"user-{i}" for i in range(5000)]
    chosen = {key: choose_variant(table, key) for key in keys}
    share = sum(v == "canary" for v in chosen.values()) / len(keys)
    assert 0.08 < share < 0.12
    assert all(choose_variant(table, key) == chosen[key] for key in keys[:200])
    wider = routes("http://a", "http://b", weight=50)
    assert all(choose_variant(wider, k) == "canary" for k, v in chosen.items() if v == "canary")
    rng = random.Random(1)
    unkeyed = Counter(choose_variant(table, None, rng=rng) for _ in range(5000))
    assert 0.08 < unkeyed["canary"] / 5000 < 0.12
    assert choose_variant(table, keys[0], override="canary") == "canary"
    assert choose_variant(routes("http://a"), "k", override="canary") == "stable"
    assert 0 <= bucket("k", "v2") < 100


@pytest.mark.slow
def test_weights_90_10_over_2000_requests(serve: Callable[..., LiveServer],
                                          stubs: dict[str, tuple[Stub, str]]) -> None:
    gateway = serve(create_gateway(routes(stubs["stable"][1], stubs["canary"][1], 10))).url
    results = fire(gateway, [predict(f"user-{i}") for i in range(2000)], concurrency=32)
    assert {r.status for r in results} == {200}
    variants = Counter(r.headers["x-bertops-variant"] for r in results)
    assert 0.08 * 2000 < variants["canary"] < 0.12 * 2000
    assert len(stubs["canary"][0].seen) == variants["canary"]
    assert metric(gateway, "bertops_gateway_requests_total", variant="canary", code="200"
                  ) == variants["canary"]
    assert metric(gateway, "bertops_gateway_predictions_total", variant="stable",
                  label="positive") == variants["stable"]
    assert metric(gateway, "bertops_gateway_request_latency_seconds_count", variant="canary"
                  ) == variants["canary"]


def test_sticky_keys_cookies_and_override(serve: Callable[..., LiveServer],
                                          stubs: dict[str, tuple[Stub, str]]) -> None:
    gateway = serve(create_gateway(routes(stubs["stable"][1], stubs["canary"][1], 50))).url
    specs = [predict(f"user-{i % 40}") for i in range(160)]
    results = fire(gateway, specs, concurrency=8)
    seen: dict[str, set[str]] = {}
    for spec, result in zip(specs, results, strict=True):
        seen.setdefault(spec["headers"]["x-bertops-key"], set()).add(  # type: ignore[index]
            result.headers["x-bertops-variant"])
    assert all(len(v) == 1 for v in seen.values())
    assert {next(iter(v)) for v in seen.values()} == {"stable", "canary"}

    with httpx.Client(base_url=gateway) as client:  # a browser: the cookie pins it
        first = client.post("/predict", json={"texts": ["x"]})
        assert "bertops-key" in first.cookies
        later = {client.post("/predict", json={"texts": ["x"]}).headers["x-bertops-variant"]
                 for _ in range(10)}
        assert later == {first.headers["x-bertops-variant"]}
        forced = client.post("/predict", json={"texts": ["x"]},
                             headers={"x-bertops-variant": "canary"})
        assert forced.headers["x-bertops-variant"] == "canary"
        assert forced.json()["predictions"][0]["label"] == "negative"


@pytest.mark.slow
def test_route_change_under_load_loses_no_request(
    serve: Callable[..., LiveServer], stubs: dict[str, tuple[Stub, str]], tmp_path: Path
) -> None:
    routes_file = tmp_path / "routes.yaml"
    stable, canary, other = stubs["stable"][1], stubs["canary"][1], stubs["other"][1]
    routes_file.write_text(yaml.safe_dump(routes(stable, canary, 10).to_wire()))
    gateway = serve(create_gateway(source=RouteSource(str(routes_file)), admin_token=TOKEN,
                                   poll_seconds=0.05)).url
    stop = threading.Event()
    changes = 0

    def change_routes() -> None:
        nonlocal changes
        with httpx.Client(base_url=gateway, headers={"authorization": f"Bearer {TOKEN}"}) as c:
            while not stop.is_set():
                weight = (changes * 30) % 100
                table = routes(other if changes % 2 else stable, canary, weight,
                               revision=str(changes))
                if changes % 3 == 0:  # alternate the file watch and the admin endpoint
                    # Replace the file atomically, as a ConfigMap volume update does.
                    staged = routes_file.with_suffix(".tmp")
                    staged.write_text(yaml.safe_dump(table.to_wire()))
                    staged.replace(routes_file)
                else:
                    assert c.put("/admin/routes", content=json.dumps(table.to_wire())).is_success
                changes += 1
                time.sleep(0.03)

    changer = threading.Thread(target=change_routes)
    changer.start()
    try:
        results = fire(gateway, [predict(f"user-{i}") for i in range(600)], concurrency=16)
    finally:
        stop.set()
        changer.join()
    assert changes >= 10
    assert Counter(r.status for r in results) == {200: 600}
    assert {r.body["model"] for r in results} == {"v1", "v1b", "v2"}  # type: ignore[index]
    assert metric(gateway, "bertops_gateway_route_reloads_total", source="admin") > 3
    assert metric(gateway, "bertops_gateway_route_reloads_total", source="file") >= 1
    assert metric(gateway, "bertops_gateway_errors_total") == 0


def test_admin_endpoint_needs_the_token(serve: Callable[..., LiveServer],
                                        stubs: dict[str, tuple[Stub, str]]) -> None:
    table = routes(stubs["stable"][1]).to_wire()
    guarded = serve(create_gateway(routes(stubs["stable"][1]), admin_token=TOKEN)).url
    assert httpx.put(guarded + "/admin/routes", json=table).status_code == 401
    assert httpx.put(guarded + "/admin/routes", json=table,
                     headers={"authorization": "Bearer nope"}).status_code == 401
    bad = httpx.put(guarded + "/admin/routes", json={"canaryWeight": 5},
                    headers={"authorization": f"Bearer {TOKEN}"})
    assert bad.status_code == 400 and "invalid routes" in bad.json()["error"]
    disabled = serve(create_gateway(routes(stubs["stable"][1]))).url
    assert httpx.put(disabled + "/admin/routes", json=table).status_code == 404


def test_shadow_does_not_change_the_answer_or_latency(
    serve: Callable[..., LiveServer], stubs: dict[str, tuple[Stub, str]]
) -> None:
    shadow_stub, shadow_url = stubs["shadow"]
    plain = serve(create_gateway(routes(stubs["stable"][1]))).url
    mirrored = serve(create_gateway(routes(stubs["stable"][1], shadow=shadow_url))).url

    def timed(url: str) -> tuple[list[object], list[float]]:
        with httpx.Client(base_url=url) as client:
            client.post("/predict", json={"texts": ["warm"]})
            answers, seconds = [], []
            for i in range(20):
                started = time.perf_counter()
                answer = client.post("/predict", json={"texts": [f"t{i}"]})
                seconds.append(time.perf_counter() - started)
                answers.append(answer.json()["predictions"])
        return answers, seconds

    base_answers, base_seconds = timed(plain)
    shadow_answers, shadow_seconds = timed(mirrored)
    assert shadow_answers == base_answers  # stable's "positive", never the shadow's
    assert max(shadow_seconds) < 0.25  # the shadow takes 0.5 s and nobody waits for it
    assert median(shadow_seconds) < median(base_seconds) + 0.02
    deadline = time.monotonic() + 5
    while metric(mirrored, "bertops_gateway_shadow_requests_total", outcome="ok") < 21:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert len(shadow_stub.seen) == 21
    assert {h["x-bertops-variant"] for h in shadow_stub.seen} == {"shadow"}
    assert metric(mirrored, "bertops_gateway_predictions_total", variant="shadow",
                  label="neutral") == 21


def test_backend_down_is_a_clear_503_and_an_error_for_its_variant(
    serve: Callable[..., LiveServer], stubs: dict[str, tuple[Stub, str]]
) -> None:
    dead = LiveServer(Stub("gone", "x").app())  # bound, never started, then closed
    dead_url = dead.url
    dead.sock.close()
    gateway = serve(create_gateway(routes(stubs["stable"][1], dead_url, 50))).url
    down = httpx.post(gateway + "/predict", json={"texts": ["x"]},
                      headers={"x-bertops-variant": "canary"})
    assert down.status_code == 503
    assert "canary backend v2" in down.json()["error"]
    assert metric(gateway, "bertops_gateway_errors_total", variant="canary",
                  reason="unavailable") == 1
    assert metric(gateway, "bertops_gateway_requests_total", variant="canary", code="503") == 1
    assert httpx.get(gateway + "/healthz").status_code == 200
    assert httpx.post(gateway + "/predict", json={"texts": ["x"]},
                      headers={"x-bertops-variant": "stable"}).status_code == 200


def test_feedback_scores_each_variant(serve: Callable[..., LiveServer],
                                      stubs: dict[str, tuple[Stub, str]], tmp_path: Path) -> None:
    feedback_log = tmp_path / "feedback.jsonl"
    gateway = serve(create_gateway(routes(stubs["stable"][1], stubs["canary"][1], 50),
                                   feedback_log=feedback_log)).url
    with httpx.Client(base_url=gateway) as client:
        ids = {}
        for variant in ("stable", "canary"):
            answer = client.post("/predict", json={"texts": ["a", "b"]},
                                 headers={"x-bertops-variant": variant})
            ids[variant] = answer.headers["x-request-id"]
        # Truth is "positive" for both texts: stable is right, canary wrong.
        result = client.post("/feedback", json=[
            {"requestId": ids["stable"], "labels": ["positive", "positive"]},
            {"requestId": ids["canary"], "index": 1, "label": "positive"},
            {"requestId": "unknown-id", "label": "positive"}]).json()
        assert result == {"accepted": 4, "matched": 3}
        assert client.post("/feedback", content=b"{oops").status_code == 400
        assert client.post("/feedback", json={"label": "x"}).status_code == 400
    assert metric(gateway, "bertops_gateway_feedback_accuracy", variant="stable") == 1.0
    assert metric(gateway, "bertops_gateway_feedback_accuracy", variant="canary") == 0.0
    assert metric(gateway, "bertops_gateway_feedback_total", outcome="unmatched") == 1
    lines = [json.loads(line) for line in feedback_log.read_text().splitlines()]
    assert [line.get("correct") for line in lines] == [True, True, False, None]


def test_gateway_in_front_of_a_real_model_server(
    serve: Callable[..., LiveServer], tiny_artifact: Path, tmp_path: Path
) -> None:
    log_path = tmp_path / "predictions.jsonl"
    server = serve(create_app(ServedModel(str(tiny_artifact), threads=1),
                              ServerSettings(prediction_log_path=log_path)))
    wait_ready(server.url)
    table = Routes.model_validate({"stable": {"name": "tiny-v1", "url": server.url,
                                              "model": "tiny-v1"}})
    gateway = serve(create_gateway(table)).url
    answer = httpx.post(gateway + "/v2/models/sentiment/infer", json={"inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["so good"]}]})
    assert answer.status_code == 200, answer.text
    request_id = answer.headers["x-request-id"]
    label = answer.json()["outputs"][0]["data"][0]
    assert httpx.get(gateway + "/v2/health/ready").status_code == 200  # proxied
    server.stop()  # flushes the prediction log
    line = json.loads(log_path.read_text().splitlines()[-1])
    assert line["requestId"] == request_id and line["variant"] == "stable"
    assert line["label"] == label
    assert httpx.post(gateway + "/feedback", json={"requestId": request_id, "label": label}
                      ).json() == {"accepted": 1, "matched": 1}


def test_cli_gateway_refuses_bad_routes(tmp_path: Path) -> None:
    bad = tmp_path / "routes.yaml"
    bad.write_text("canaryWeight: 10\n")
    result = CliRunner().invoke(cli, ["gateway", "--routes", str(bad), "--port", "1"])
    assert result.exit_code == 2
    assert "cannot read routes" in result.output
