"""The model server over real HTTP on loopback: Open Inference Protocol v2 round trip,
the plain /predict, dynamic batching, metrics that match the traffic, the prediction
log, readiness after warm-up, bad input and graceful shutdown."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from bertops.server.app import ServerSettings, create_app
from bertops.server.model import Prediction, ServedModel
from bertops.server.predictionlog import PredictionLog, PredictionRecord, Privacy
from tests.server.artifacts import LABELS
from tests.server.conftest import LiveServer, wait_ready
from tests.server.helpers import fire, metric, samples


def start_model_server(serve: Callable[..., LiveServer], artifact: Path, **settings: Any) -> str:
    app = create_app(ServedModel(str(artifact), threads=1), ServerSettings(**settings))
    url = serve(app).url
    wait_ready(url)
    return url


@pytest.fixture(scope="module")
def shared_url(tiny_artifact: Path) -> Iterator[str]:
    """One server for the tests that do not count anything."""
    app = create_app(
        ServedModel(str(tiny_artifact), threads=1),
        ServerSettings(max_texts_per_request=4, max_chars=50),
    )
    server = LiveServer(app).start()
    wait_ready(server.url)
    yield server.url
    server.stop()


def test_oip_v2_round_trip(shared_url: str) -> None:
    with httpx.Client(base_url=shared_url) as client:
        check_round_trip(client)


def check_round_trip(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/tiny-v1/ready").status_code == 200
    metadata = client.get("/v2/models/tiny-v1").json()
    assert metadata["name"] == "tiny-v1" and metadata["versions"] == ["tiny-v1"]
    assert metadata["inputs"][0]["datatype"] == "BYTES"
    assert metadata["parameters"]["labels"] == LABELS

    request = {
        "id": "req-1",
        "inputs": [
            {
                "name": "text",
                "shape": [3],
                "datatype": "BYTES",
                "data": ["great movie", "terrible", "it was fine I guess"],
            }
        ],
    }
    answer = client.post("/v2/models/tiny-v1/infer", json=request)
    assert answer.status_code == 200
    body = answer.json()
    assert body["model_name"] == "tiny-v1" and body["id"] == "req-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["label"]["shape"] == [3] and outputs["label"]["datatype"] == "BYTES"
    assert all(label in LABELS for label in outputs["label"]["data"])
    assert outputs["probabilities"]["shape"] == [3, 3]
    probabilities = outputs["probabilities"]["data"]
    for row in range(3):
        assert sum(probabilities[row * 3 : row * 3 + 3]) == pytest.approx(1, abs=1e-5)
        assert max(probabilities[row * 3 : row * 3 + 3]) == pytest.approx(
            outputs["score"]["data"][row]
        )

    # Versioned path, nested [n, 1] shape, a chosen output only.
    versioned = client.post(
        "/v2/models/tiny-v1/versions/tiny-v1/infer",
        json={
            "inputs": [
                {
                    "name": "t",
                    "shape": [2, 1],
                    "datatype": "BYTES",
                    "data": [["great movie"], ["terrible"]],
                }
            ],
            "outputs": [{"name": "label"}],
        },
    ).json()
    assert [o["name"] for o in versioned["outputs"]] == ["label"]
    assert versioned["outputs"][0]["data"] == outputs["label"]["data"][:2]

    plain = client.post("/predict", json={"texts": ["great movie"]}).json()
    assert plain["predictions"][0]["label"] == outputs["label"]["data"][0]
    assert set(plain["predictions"][0]["probabilities"]) == set(LABELS)
    assert client.get("/v2/models/other").status_code == 404


BAD_REQUESTS = [
    ("/predict", b"{not json", 400, "invalid JSON"),
    ("/predict", b"", 400, "empty request body"),
    ("/predict", b"[1, 2]", 400, "expected a JSON object"),
    ("/predict", b'{"text": "hi"}', 400, 'missing field "texts"'),
    ("/predict", b'{"texts": "hi"}', 400, "must be a list of strings"),
    ("/predict", b'{"texts": ["ok", 3]}', 400, "texts[1] must be a string"),
    ("/predict", b'{"texts": []}', 400, "is empty"),
    ("/predict", b'{"texts": ["a", "b", "c", "d", "e"]}', 413, "at most 4 per request"),
    ("/predict", json.dumps({"texts": ["x" * 51]}).encode(), 413, "at most 50"),
    ("/v2/models/tiny-v1/infer", b'{"inputs": []}', 400, "exactly one tensor"),
    (
        "/v2/models/tiny-v1/infer",
        json.dumps(
            {"inputs": [{"name": "t", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
        ).encode(),
        400,
        "expected BYTES",
    ),
    (
        "/v2/models/tiny-v1/infer",
        json.dumps(
            {"inputs": [{"name": "t", "shape": [3], "datatype": "BYTES", "data": ["a"]}]}
        ).encode(),
        400,
        "shape holds 3 elements",
    ),
    (
        "/v2/models/tiny-v1/infer",
        json.dumps(
            {
                "inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
                "outputs": [{"name": "embedding"}],
            }
        ).encode(),
        400,
        "unknown outputs",
    ),
    (
        # One request, the whole tensor once per repeat: refused, never amplified.
        "/v2/models/tiny-v1/infer",
        json.dumps(
            {
                "inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
                "outputs": [{"name": "probabilities"}] * 90,
            }
        ).encode(),
        400,
        "outputs named more than once: ['probabilities']",
    ),
    (
        "/v2/models/nope/infer",
        json.dumps(
            {"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}
        ).encode(),
        404,
        "not found",
    ),
    ("/predict", b'{"texts": ["' + b"y" * 2_000_000 + b'"]}', 413, "exceeds"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD_REQUESTS)
def test_bad_input_gets_a_4xx_in_the_protocol_error_shape(
    shared_url: str, path: str, body: bytes, status: int, message: str
) -> None:
    answer = httpx.post(
        shared_url + path, content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == status
    assert message in answer.json()["error"]


def test_wrong_method_and_unknown_path_use_the_error_shape(shared_url: str) -> None:
    assert httpx.get(shared_url + "/predict").status_code == 405
    assert "error" in httpx.get(shared_url + "/predict").json()
    assert httpx.get(shared_url + "/nowhere").json() == {"error": "Not Found"}


def test_batching_groups_concurrent_requests(
    serve: Callable[..., LiveServer], tiny_artifact: Path
) -> None:
    url = start_model_server(serve, tiny_artifact, max_batch_size=16, max_batch_wait_ms=300)
    results = fire(
        url,
        [{"path": "/predict", "json": {"texts": [f"text {i}"]}} for i in range(16)],
        concurrency=16,
    )
    assert [r.status for r in results] == [200] * 16
    batches = metric(url, "bertops_server_batch_size_count")
    texts = metric(url, "bertops_server_batch_size_sum")
    assert texts == 16
    assert batches <= 3, f"16 concurrent requests ran in {batches} batches"
    assert metric(url, "bertops_server_batch_size_bucket", le="8.0") < batches or batches == 1


def test_metrics_match_the_traffic(serve: Callable[..., LiveServer], tiny_artifact: Path) -> None:
    url = start_model_server(serve, tiny_artifact, max_batch_wait_ms=0)
    sizes = [1, 3, 2, 5, 1]
    answers = [
        httpx.post(url + "/predict", json={"texts": [f"t{i}"] * n}).json()
        for i, n in enumerate(sizes)
    ]
    infer = {"inputs": [{"name": "t", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}
    answers += [
        {
            "predictions": [
                {"label": label}
                for label in httpx.post(url + "/v2/models/tiny-v1/infer", json=infer).json()[
                    "outputs"
                ][0]["data"]
            ]
        }
        for _ in range(3)
    ]
    for _ in range(2):
        httpx.post(url + "/predict", content=b"nope")
    labels = Counter(p["label"] for a in answers for p in a["predictions"])

    text = httpx.get(url + "/metrics").text
    assert samples(text, "bertops_server_requests_total", endpoint="predict", status="200") == [5]
    assert samples(text, "bertops_server_requests_total", endpoint="infer", status="200") == [3]
    assert samples(text, "bertops_server_requests_total", endpoint="predict", status="400") == [2]
    for label, count in labels.items():
        assert samples(text, "bertops_server_predictions_total", label=label) == [count]
    total = sum(sizes) + 6
    assert sum(samples(text, "bertops_server_predictions_total")) == total
    assert samples(text, "bertops_server_prediction_confidence_count") == [total]
    assert samples(text, "bertops_server_batch_size_sum") == [total]
    assert samples(text, "bertops_server_queue_latency_seconds_count") == [8]
    assert samples(text, "bertops_server_request_latency_seconds_count", endpoint="predict") == [7]
    assert samples(text, "bertops_server_model_info", version="tiny-v1", format="safetensors")
    assert samples(text, "bertops_server_model_ready") == [1]


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_prediction_log_one_line_per_prediction_and_survives_restart(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    log_path = tmp_path / "log" / "predictions.jsonl"

    def run_server(privacy: Privacy, texts: list[list[str]]) -> list[str]:
        app = create_app(
            ServedModel(str(tiny_artifact), threads=1),
            ServerSettings(
                prediction_log=privacy,
                prediction_log_path=log_path,
            ),
        )
        server = LiveServer(app).start()
        try:
            wait_ready(server.url)
            return [
                httpx.post(
                    server.url + "/predict",
                    json={"texts": t},
                    headers={"x-request-id": f"{privacy}-{i}"},
                ).json()["requestId"]
                for i, t in enumerate(texts)
            ]
        finally:
            server.stop()  # the log is flushed on shutdown

    first_ids = run_server("hash", [["secret one", "secret two"], ["secret three"]])
    first = read_lines(log_path)
    assert len(first) == 3
    assert [line["requestId"] for line in first] == [first_ids[0]] * 2 + [first_ids[1]]
    assert all("text" not in line and len(str(line["textSha256"])) == 64 for line in first)
    assert {line["modelVersion"] for line in first} == {"tiny-v1"}
    assert all(line["label"] in LABELS and 0 < float(line["confidence"]) <= 1 for line in first)

    run_server("text", [["visible text"]])
    both = read_lines(log_path)
    assert both[:3] == first  # the restart appended; nothing was lost or rewritten
    assert len(both) == 4 and both[3]["text"] == "visible text"


def test_prediction_log_rotates_by_size(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    log = PredictionLog(path, "hash", max_bytes=2000, backups=2)
    for i in range(30):
        log.write([PredictionRecord(time.time(), "m", "v1", f"r{i}", 0, "t", "positive", 0.9, 1.0)])
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["p.jsonl", "p.jsonl.1", "p.jsonl.2"]
    assert all(p.stat().st_size <= 2000 for p in tmp_path.iterdir())
    assert read_lines(path)[-1]["requestId"] == "r29"


def test_ready_only_after_load_and_warmup(
    serve: Callable[..., LiveServer], tiny_artifact: Path
) -> None:
    release = threading.Event()
    warmed: list[int] = []

    class Slow:
        labels = LABELS

        def predict(self, texts: Sequence[str]) -> list[Prediction]:
            warmed.append(len(texts))
            return [Prediction("neutral", 0.5, [0.25, 0.5, 0.25]) for _ in texts]

    def loader(_artifact: object, _threads: int | None) -> Slow:
        release.wait(10)
        return Slow()

    url = serve(create_app(ServedModel(str(tiny_artifact), loader=loader))).url
    assert httpx.get(url + "/v2/health/live").status_code == 200
    assert httpx.get(url + "/v2/health/ready").status_code == 503
    assert httpx.get(url + "/v2/models/tiny-v1/ready").status_code == 503
    refused = httpx.post(url + "/predict", json={"texts": ["hi"]})
    assert refused.status_code == 503 and "not ready" in refused.json()["error"]
    release.set()
    wait_ready(url)
    assert warmed[:2] == [1, 8]  # warm-up batches ran before ready
    assert httpx.post(url + "/predict", json={"texts": ["hi"]}).status_code == 200


def test_load_warm_up_and_every_batch_run_on_one_thread(
    serve: Callable[..., LiveServer], tiny_artifact: Path
) -> None:
    """Loading, the warm-up batches and the requests' batches all run on the batcher's
    inference thread: torch work from a second thread left a second OpenMP team that
    made batch-1 inference 1.4-2x slower (see DynamicBatcher.run_on_inference_thread)."""
    threads: list[str] = []

    class Recording:
        labels = LABELS

        def predict(self, texts: Sequence[str]) -> list[Prediction]:
            threads.append(threading.current_thread().name)
            return [Prediction("neutral", 0.5, [0.25, 0.5, 0.25]) for _ in texts]

    def loader(_artifact: object, _threads: int | None) -> Recording:
        threads.append(threading.current_thread().name)
        return Recording()

    url = serve(create_app(ServedModel(str(tiny_artifact), loader=loader))).url
    wait_ready(url)
    for _ in range(3):
        assert httpx.post(url + "/predict", json={"texts": ["hi"]}).status_code == 200
    assert len(threads) == 1 + 2 + 3  # the load, two warm-up batches, three requests
    assert len(set(threads)) == 1 and threads[0].startswith("bertops-inference"), threads


def test_graceful_shutdown_drains_in_flight_requests(tiny_artifact: Path) -> None:
    app = create_app(
        ServedModel(str(tiny_artifact), threads=1),
        ServerSettings(max_batch_wait_ms=400, max_batch_size=64),
    )
    server = LiveServer(app).start()
    wait_ready(server.url)
    results: list[list[int]] = []
    sender = threading.Thread(
        target=lambda: results.append(
            [
                r.status
                for r in fire(
                    server.url, [{"path": "/predict", "json": {"texts": ["drain me"]}}] * 8, 8
                )
            ]
        )
    )
    sender.start()
    # Stop only once all 8 reached the server (in flight, or already answered: an idle
    # model runs the first at once): a request not yet sent would be refused, not drained.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        arrived = metric(server.url, "bertops_server_requests_in_flight") - 1  # this scrape
        arrived += metric(server.url, "bertops_server_requests_total", endpoint="predict")
        if arrived >= 8:
            break
        time.sleep(0.02)
    server.stop()
    sender.join(10)
    assert results == [[200] * 8]
