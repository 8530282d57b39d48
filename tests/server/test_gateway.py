"""The gateway over real HTTP on loopback: weighted and sticky canary routing, header
override (only when configured), route changes under load through the file and the
loopback admin port, shadow traffic, feedback (only for ids the gateway issued, labels
checked, memory bounded), bounded bodies, a backend that is down, and the gateway in
front of a real model server (request ids reach the prediction log)."""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from statistics import median
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from bertops.server.app import ServerSettings, create_app
from bertops.server.cli import app as cli
from bertops.server.gateway.access import FeedbackAccess
from bertops.server.gateway.admin import listener
from bertops.server.gateway.app import Gateway, create_gateway
from bertops.server.gateway.routes import Backend, Routes, RouteSource, bucket, choose_variant
from bertops.server.gateway.served import Served, ServedStore
from bertops.server.model import ServedModel
from tests.server.conftest import LiveServer, wait_ready
from tests.server.helpers import Stub, fire, metric, serve_gateway

TOKEN = "s3cret"
FORCE = "x-bertops-variant"
LABELS = ["positive", "negative", "neutral"]


def routes(
    stable: str,
    canary: str | None = None,
    weight: float = 0,
    shadow: str | None = None,
    **extra: object,
) -> Routes:
    """Routes for the stubs, with their labels as the operator writes them; the override
    header is on here (it is off by default)."""
    document: dict[str, object] = {
        "stable": {"name": "v1", "url": stable, "labels": LABELS},
        "overrideHeader": FORCE,
        **extra,
    }
    if canary:
        document |= {
            "canary": {"name": "v2", "url": canary, "labels": LABELS},
            "canaryWeight": weight,
        }
    if shadow:
        document["shadow"] = {"name": "v3", "url": shadow, "labels": LABELS}
    return Routes.model_validate(document)


def predict(key: str | None = None, **headers: str) -> dict[str, Any]:
    if key is not None:
        headers["x-bertops-key"] = key
    return {"path": "/predict", "json": {"texts": ["hello"]}, "headers": headers}


def gateway_app(*args: Any, **kwargs: Any) -> Gateway:
    """A gateway that names variant and model in its answers (off by default), which
    most tests read; start it with :func:`serve_gateway`."""
    kwargs.setdefault("expose_headers", True)
    kwargs.setdefault("feedback_access", FeedbackAccess.open())
    return Gateway(*args, **kwargs)


@pytest.fixture
def stubs(serve: Callable[..., LiveServer]) -> dict[str, tuple[Stub, str]]:
    made = {
        "stable": Stub("v1", "positive"),
        "canary": Stub("v2", "negative"),
        "other": Stub("v1b", "positive"),
        "shadow": Stub("v3", "neutral", delay=0.5),
    }
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
def test_weights_90_10_over_2000_requests(
    serve: Callable[..., LiveServer], stubs: dict[str, tuple[Stub, str]]
) -> None:
    gateway = serve_gateway(
        serve,
        gateway_app(routes(stubs["stable"][1], stubs["canary"][1], 10, sticky={"mode": "header"})),
    )
    results = fire(gateway, [predict(f"user-{i}") for i in range(2000)], concurrency=32)
    assert {r.status for r in results} == {200}
    variants = Counter(r.headers["x-bertops-variant"] for r in results)
    assert 0.08 * 2000 < variants["canary"] < 0.12 * 2000
    assert len(stubs["canary"][0].seen) == variants["canary"]
    assert (
        metric(gateway, "bertops_gateway_requests_total", variant="canary", code="200")
        == variants["canary"]
    )
    assert (
        metric(gateway, "bertops_gateway_predictions_total", variant="stable", label="positive")
        == variants["stable"]
    )
    assert (
        metric(gateway, "bertops_gateway_request_latency_seconds_count", variant="canary")
        == variants["canary"]
    )


def test_sticky_keys_cookies_and_override(
    serve: Callable[..., LiveServer], stubs: dict[str, tuple[Stub, str]]
) -> None:
    gateway = serve_gateway(
        serve,
        gateway_app(routes(stubs["stable"][1], stubs["canary"][1], 50, sticky={"mode": "cookie"})),
    )
    specs = [predict(f"user-{i % 40}") for i in range(160)]
    results = fire(gateway, specs, concurrency=8)
    seen: dict[str, set[str]] = {}
    for spec, result in zip(specs, results, strict=True):
        seen.setdefault(spec["headers"]["x-bertops-key"], set()).add(
            result.headers["x-bertops-variant"]
        )
    assert all(len(v) == 1 for v in seen.values())
    assert {next(iter(v)) for v in seen.values()} == {"stable", "canary"}

    with httpx.Client(base_url=gateway) as client:  # a browser: the cookie pins it
        first = client.post("/predict", json={"texts": ["x"]})
        assert "bertops-key" in first.cookies
        later = {
            client.post("/predict", json={"texts": ["x"]}).headers["x-bertops-variant"]
            for _ in range(10)
        }
        assert later == {first.headers["x-bertops-variant"]}
        forced = client.post(
            "/predict", json={"texts": ["x"]}, headers={"x-bertops-variant": "canary"}
        )
        assert forced.headers["x-bertops-variant"] == "canary"
        assert forced.json()["predictions"][0]["label"] == "negative"


@pytest.mark.slow
def test_route_change_under_load_loses_no_request(
    serve: Callable[..., LiveServer], stubs: dict[str, tuple[Stub, str]], tmp_path: Path
) -> None:
    routes_file = tmp_path / "routes.yaml"
    stable, canary, other = stubs["stable"][1], stubs["canary"][1], stubs["other"][1]
    routes_file.write_text(yaml.safe_dump(routes(stable, canary, 10).to_wire()))
    both = Gateway(source=RouteSource(str(routes_file)), admin_token=TOKEN, poll_seconds=0.05)
    assert both.admin_app is not None
    gateway, admin = serve_gateway(serve, both), serve(both.admin_app).url
    stop = threading.Event()
    changes = 0

    def change_routes() -> None:
        nonlocal changes
        with httpx.Client(base_url=admin, headers={"authorization": f"Bearer {TOKEN}"}) as c:
            while not stop.is_set():
                weight = (changes * 30) % 100
                table = routes(
                    other if changes % 2 else stable, canary, weight, revision=str(changes)
                )
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
    assert {r.body["model"] for r in results} == {"v1", "v1b", "v2"}
    assert metric(gateway, "bertops_gateway_route_reloads_total", source="admin") > 3
    assert metric(gateway, "bertops_gateway_route_reloads_total", source="file") >= 1
    assert metric(gateway, "bertops_gateway_errors_total") == 0


def test_admin_is_on_its_own_port_and_needs_the_token(
    serve: Callable[..., LiveServer], stubs: dict[str, tuple[Stub, str]]
) -> None:
    stable, canary = stubs["stable"][1], stubs["canary"][1]
    both = Gateway(routes(stable), admin_token=TOKEN)
    assert both.admin_app is not None
    public, admin = serve(both.app).url, serve(both.admin_app).url
    wanted = routes(stable, canary, 100).to_wire()
    auth = {"authorization": f"Bearer {TOKEN}"}
    # Public traffic never reaches the admin endpoint, even with the token: the path is
    # just proxied to the model server, and the routes stay as they were.
    assert httpx.put(public + "/admin/routes", json=wanted, headers=auth).status_code == 404
    assert httpx.put(admin + "/admin/routes", json=wanted).status_code == 401
    assert (
        httpx.put(
            admin + "/admin/routes", json=wanted, headers={"authorization": "Bearer nope"}
        ).status_code
        == 401
    )
    bad = httpx.put(admin + "/admin/routes", json={"canaryWeight": 5}, headers=auth)
    assert bad.status_code == 400 and "invalid routes" in bad.json()["error"]
    assert httpx.get(admin + "/admin/routes", headers=auth).json()["stable"]["url"] == stable
    assert httpx.post(public + "/predict", json={"texts": ["x"]}).json()["model"] == "v1"
    assert httpx.put(admin + "/admin/routes", json=wanted, headers=auth).is_success
    assert httpx.post(public + "/predict", json={"texts": ["x"]}).json()["model"] == "v2"
    assert Gateway(routes(stable)).admin_app is None  # no token, no admin endpoint


def test_shadow_does_not_change_the_answer_or_latency(
    serve: Callable[..., LiveServer], stubs: dict[str, tuple[Stub, str]]
) -> None:
    shadow_stub, shadow_url = stubs["shadow"]
    plain = serve_gateway(serve, gateway_app(routes(stubs["stable"][1])))
    mirrored = serve_gateway(serve, gateway_app(routes(stubs["stable"][1], shadow=shadow_url)))

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
    # The shadow answers after 0.5 s: a gateway that waited for it would take >= 0.5 s on
    # every request. Medians and a bound relative to this run's own no-shadow baseline keep
    # the check stable when other suites load the 2 cores (one slow request is noise).
    shadow_delay = stubs["shadow"][0].delay
    assert median(shadow_seconds) < shadow_delay / 2
    assert median(shadow_seconds) < 3 * median(base_seconds) + shadow_delay / 5
    deadline = time.monotonic() + 30  # a bound for failing, not a speed requirement
    while metric(mirrored, "bertops_gateway_shadow_requests_total", outcome="ok") < 21:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert len(shadow_stub.seen) == 21
    assert {h["x-bertops-variant"] for h in shadow_stub.seen} == {"shadow"}
    assert (
        metric(mirrored, "bertops_gateway_predictions_total", variant="shadow", label="neutral")
        == 21
    )


def test_backend_down_is_a_clear_503_and_an_error_for_its_variant(
    serve: Callable[..., LiveServer], stubs: dict[str, tuple[Stub, str]]
) -> None:
    dead = LiveServer(Stub("gone", "x").app())  # bound, never started, then closed
    dead_url = dead.url
    dead.sock.close()
    gateway = serve_gateway(serve, gateway_app(routes(stubs["stable"][1], dead_url, 50)))
    down = httpx.post(
        gateway + "/predict", json={"texts": ["x"]}, headers={"x-bertops-variant": "canary"}
    )
    assert down.status_code == 503
    assert "canary backend v2" in down.json()["error"]
    assert (
        metric(gateway, "bertops_gateway_errors_total", variant="canary", reason="unavailable") == 1
    )
    assert metric(gateway, "bertops_gateway_requests_total", variant="canary", code="503") == 1
    assert httpx.get(gateway + "/healthz").status_code == 200
    assert (
        httpx.post(
            gateway + "/predict", json={"texts": ["x"]}, headers={"x-bertops-variant": "stable"}
        ).status_code
        == 200
    )


def test_feedback_scores_each_variant(
    serve: Callable[..., LiveServer], stubs: dict[str, tuple[Stub, str]], tmp_path: Path
) -> None:
    feedback_log = tmp_path / "feedback.jsonl"
    gateway = serve_gateway(
        serve,
        gateway_app(routes(stubs["stable"][1], stubs["canary"][1], 50), feedback_log=feedback_log),
    )
    with httpx.Client(base_url=gateway) as client:
        ids = {}
        for variant in ("stable", "canary"):
            answer = client.post("/predict", json={"texts": ["a", "b"]}, headers={FORCE: variant})
            ids[variant] = answer.headers["x-request-id"]
        # Truth is "positive" for both texts: stable is right, canary wrong.
        result = client.post(
            "/feedback",
            json=[
                {"requestId": ids["stable"], "labels": ["positive", "positive"]},
                {"requestId": ids["canary"], "index": 1, "label": "positive"},
            ],
        ).json()
        assert result == {"accepted": 3, "duplicates": 0}
        # Each text is judged once: repeating feedback cannot skew a variant's accuracy.
        again = client.post(
            "/feedback", json={"requestId": ids["canary"], "index": 1, "label": "positive"}
        )
        assert again.json() == {"accepted": 0, "duplicates": 1}
        assert client.post("/feedback", content=b"{oops").status_code == 400
        # Deep nesting is bad input too (it was a 500: a RecursionError in the parser).
        deep = client.post("/feedback", content=b"[" * 100_000 + b"]" * 100_000)
        assert deep.status_code == 400 and "nested too deeply" in deep.json()["error"]
        assert client.post("/feedback", json={"label": "x"}).status_code == 400
    assert metric(gateway, "bertops_gateway_feedback_accuracy", variant="stable") == 1.0
    assert metric(gateway, "bertops_gateway_feedback_accuracy", variant="canary") == 0.0
    assert metric(gateway, "bertops_gateway_feedback_total", variant="canary") == 1
    assert metric(gateway, "bertops_gateway_feedback_rejected_total", reason="duplicate") == 1
    deadline = time.monotonic() + 10  # written by a background thread
    while time.monotonic() < deadline and (
        not feedback_log.exists() or len(feedback_log.read_text().splitlines()) < 3
    ):
        time.sleep(0.02)
    lines = [json.loads(line) for line in feedback_log.read_text().splitlines()]
    assert [line["correct"] for line in lines] == [True, True, False]
    assert [line["text"] for line in lines] == ["a", "b", "b"]


def test_gateway_in_front_of_a_real_model_server(
    serve: Callable[..., LiveServer], tiny_artifact: Path, tmp_path: Path
) -> None:
    log_path = tmp_path / "predictions.jsonl"
    server = serve(
        create_app(
            ServedModel(str(tiny_artifact), threads=1), ServerSettings(prediction_log_path=log_path)
        )
    )
    wait_ready(server.url)
    table = Routes.model_validate(
        {"stable": {"name": "tiny-v1", "url": server.url, "model": "tiny-v1"}}
    )
    gateway = serve_gateway(serve, gateway_app(table))
    answer = httpx.post(
        gateway + "/v2/models/sentiment/infer",
        json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["so good"]}]},
    )
    assert answer.status_code == 200, answer.text
    request_id = answer.headers["x-request-id"]
    label = answer.json()["outputs"][0]["data"][0]
    assert httpx.get(gateway + "/v2/health/ready").status_code == 200  # proxied
    # The routes carry no labels and OIP answers none: the gateway asks the server's
    # model metadata, then checks the label against them.
    wrong = httpx.post(gateway + "/feedback", json={"requestId": request_id, "label": "meh"})
    assert wrong.status_code == 422 and "not a label of tiny-v1" in wrong.json()["error"]
    assert httpx.post(
        gateway + "/feedback", json={"requestId": request_id, "label": label}
    ).json() == {"accepted": 1, "duplicates": 0}
    server.stop()  # flushes the prediction log
    line = json.loads(log_path.read_text().splitlines()[-1])
    assert line["requestId"] == request_id and line["variant"] == "stable"
    assert line["label"] == label


def test_cli_gateway_refuses_bad_routes(tmp_path: Path) -> None:
    bad = tmp_path / "routes.yaml"
    bad.write_text("canaryWeight: 10\n")
    result = CliRunner().invoke(cli, ["gateway", "--routes", str(bad), "--port", "1"])
    assert result.exit_code == 2
    assert "cannot read routes" in result.output


def test_override_and_version_headers_are_off_by_default(
    serve: Callable[..., LiveServer], stubs: dict[str, tuple[Stub, str]]
) -> None:
    table = Routes.model_validate(
        {
            "stable": {"name": "v1", "url": stubs["stable"][1]},
            "canary": {"name": "v2", "url": stubs["canary"][1]},
            "canaryWeight": 0,
        }
    )
    assert table.override_header is None
    gateway = serve(create_gateway(table)).url
    answer = httpx.post(gateway + "/predict", json={"texts": ["x"]}, headers={FORCE: "canary"})
    assert answer.status_code == 200
    assert answer.json()["model"] == "v1"  # the header is ignored: weight 0 means stable
    leaks = {"x-bertops-variant", "x-bertops-model"} & set(answer.headers)
    assert not leaks and answer.headers["x-request-id"]
    # The CLI's listeners do not announce the server software either.
    assert listener(create_gateway(table), "127.0.0.1", 0, 1, False).config.server_header is False


def test_request_ids_are_the_gateways_and_feedback_is_checked(
    serve: Callable[..., LiveServer], stubs: dict[str, tuple[Stub, str]]
) -> None:
    both = Gateway(
        routes(stubs["stable"][1]),
        feedback_window_seconds=0.5,
        feedback_access=FeedbackAccess.open(),
    )
    gateway = serve_gateway(serve, both)
    with httpx.Client(base_url=gateway) as client:
        answer = client.post(
            "/predict", json={"texts": ["a", "b"]}, headers={"x-request-id": "chosen-by-client"}
        )
        issued = answer.headers["x-request-id"]
        assert issued != "chosen-by-client" and len(issued) == 32
        assert stubs["stable"][0].seen[-1]["x-request-id"] == issued

        def feedback(*items: dict[str, object]) -> httpx.Response:
            return client.post("/feedback", json=list(items))

        unknown = feedback({"requestId": "chosen-by-client", "label": "positive"})
        assert unknown.status_code == 404 and unknown.json()["requestIds"] == ["chosen-by-client"]
        # One bad item refuses the whole request: nothing of it is recorded.
        mixed = feedback(
            {"requestId": issued, "label": "positive"},
            {"requestId": issued, "index": 1, "label": "bogus"},
        )
        assert mixed.status_code == 422 and "'bogus' is not a label of v1" in mixed.text
        assert (
            feedback({"requestId": issued, "index": 2, "label": "positive"}).status_code == 422
        )  # only 2 texts were answered
        assert metric(gateway, "bertops_gateway_feedback_total") == 0
        assert feedback({"requestId": issued, "labels": ["positive", "negative"]}).json() == {
            "accepted": 2,
            "duplicates": 0,
        }
        later = client.post("/predict", json={"texts": ["c"]}).headers["x-request-id"]
        time.sleep(0.6)  # past the feedback window
        assert feedback({"requestId": later, "label": "positive"}).status_code == 404
    assert metric(gateway, "bertops_gateway_feedback_rejected_total", reason="unknown_id") == 2
    assert metric(gateway, "bertops_gateway_feedback_rejected_total", reason="invalid_label") == 2
    assert metric(gateway, "bertops_gateway_feedback_accuracy", variant="stable") == 0.5


def test_served_store_is_bounded_in_bytes_and_time() -> None:
    now = [0.0]
    store = ServedStore(max_bytes=20_000, window_seconds=60, clock=lambda: now[0])
    backend = Backend(name="v1", url="http://x")
    for i in range(100):  # answers of 30 texts each: far more than 20 kB in all
        store.add(f"id-{i:03d}", Served("stable", backend, ("positive",) * 30, now[0]))
    assert 0 < store.bytes <= 20_000
    assert store.get("id-000") is None and store.get("id-099") is not None
    huge = Served("stable", backend, ("x" * 100,) * 1000, now[0])
    store.add("huge", huge)  # bigger than the whole budget: not remembered, nothing evicted
    assert store.get("huge") is None and store.get("id-099") is not None
    now[0] = 61
    assert store.get("id-099") is None and store.bytes == 0 and len(store) == 0


def test_large_answers_cost_their_texts_never_other_answers_ids() -> None:
    """A flood of maximum-size requests (64 texts of 5000 characters) used to push every
    remembered id out, so genuine feedback got 404: texts now have a budget of their own."""
    now = [0.0]
    store = ServedStore(4 << 20, 60, clock=lambda: now[0], max_text_bytes=1 << 20)
    backend = Backend(name="v1", url="http://x")
    genuine = Served("stable", backend, ("positive",), now[0], texts=("a genuine text",))
    store.add("genuine", genuine)
    for i in range(300):  # about 100 MB of texts against a 1 MiB text budget
        texts = tuple(f"{i:04d}" + "x" * 4996 for _ in range(64))
        store.add(f"flood-{i}", Served("stable", backend, ("positive",) * 64, now[0], texts=texts))
        assert store.text_bytes <= store.max_text_bytes
    assert store.get("genuine") is genuine and genuine.texts is None  # kept; its row is gone
    assert len(store) == 301 and store.answer_bytes <= store.max_bytes
    kept = []
    for i in range(300):
        flooded = store.get(f"flood-{i}")
        assert flooded is not None
        if flooded.texts:
            kept.append(i)
    assert kept and kept == list(range(300 - len(kept), 300))  # the newest keep theirs


def test_bodies_are_bounded_while_streaming(
    serve: Callable[..., LiveServer], stubs: dict[str, tuple[Stub, str]]
) -> None:
    stub, url = stubs["stable"]
    both = Gateway(
        routes(url), admin_token=TOKEN, max_body_bytes=4096, feedback_access=FeedbackAccess.open()
    )
    assert both.admin_app is not None
    gateway, admin = serve_gateway(serve, both), serve(both.admin_app).url

    def chunked(total: int) -> Iterator[bytes]:  # no Content-Length: read as a stream
        for _ in range(total // 1024):
            yield b" " * 1024

    big = httpx.post(gateway + "/predict", content=chunked(64 << 10))
    assert big.status_code == 413 and "4096" in big.json()["error"]
    declared = httpx.post(gateway + "/predict", content=b" " * 5000)  # Content-Length
    assert declared.status_code == 413
    assert stub.seen == []  # nothing reached the model server
    over = (1 << 20) + 4096
    assert httpx.post(gateway + "/feedback", content=chunked(over)).status_code == 413
    assert (
        httpx.put(
            admin + "/admin/routes",
            content=chunked(over),
            headers={"authorization": f"Bearer {TOKEN}"},
        ).status_code
        == 413
    )
    assert metric(gateway, "bertops_gateway_feedback_rejected_total", reason="too_large") == 1
    assert httpx.post(gateway + "/predict", json={"texts": ["ok"]}).status_code == 200


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_cli_gateway_serves_admin_on_loopback_and_stops_on_sigterm(
    stubs: dict[str, tuple[Stub, str]], tmp_path: Path
) -> None:
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(yaml.safe_dump(routes(stubs["stable"][1]).to_wire()))
    port, admin_port = free_port(), free_port()
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bertops.cli.main",
            "server",
            "gateway",
            "--routes",
            str(routes_file),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
            "--admin-token",
            TOKEN,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", "/healthz")
        admin = httpx.get(
            f"http://127.0.0.1:{admin_port}/admin/routes",
            headers={"authorization": f"Bearer {TOKEN}"},
        )
        assert admin.status_code == 200 and admin.json()["stable"]["name"] == "v1"
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"texts": ["x"]})
        assert answer.status_code == 200 and "server" not in answer.headers
        process.send_signal(signal.SIGTERM)  # stops both listeners, not just one
        assert process.wait(30) == 0, (tmp_path / "gateway.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def test_metrics_are_on_their_own_listener(
    serve: Callable[..., LiveServer], stubs: dict[str, tuple[Stub, str]]
) -> None:
    """The counters name the canary and its model: the public port does not serve them
    (nor proxies a model server's), only the metrics listener does."""
    stub, url = stubs["stable"]
    gateway = serve_gateway(serve, gateway_app(routes(url)))
    assert httpx.post(gateway + "/predict", json={"texts": ["x"]}).status_code == 200
    public = httpx.get(gateway + "/metrics")
    assert public.status_code == 404 and "metrics port" in public.json()["error"]
    assert len(stub.seen) == 1  # the prediction only: /metrics was not proxied
    assert metric(gateway, "bertops_gateway_requests_total", variant="stable") == 1
    assert httpx.get(gateway.metrics + "/predict").status_code == 404
