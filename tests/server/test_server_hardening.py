"""The model server against hostile or broken input, in process (Starlette's TestClient
runs the real app and its lifespan): texts and ids that are no valid text, JSON that is
too deep or has a too long integer, the body ceiling, overload (503 + Retry-After), a dead
inference worker failing readiness, a NaN model refused at warm-up, a prediction log
writer that survives bad records and a close that cannot hang, and the uvicorn limits
taken from the settings."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from bertops.api.deployment import Serving
from bertops.server import cli
from bertops.server.app import ModelServer, ServerSettings
from bertops.server.model import ModelOutputError, Prediction, ServedModel
from bertops.server.predictionlog import PredictionLog, PredictionRecord
from bertops.server.protocol import Limits, ProtocolError, parse_json
from tests.server.artifacts import LABELS
from tests.server.conftest import LiveServer, wait_ready
from tests.server.helpers import fire

if TYPE_CHECKING:
    import httpx2  # what Starlette's TestClient answers with

INFER = "/v2/models/tiny-v1/infer"


def wait_until_ready(client: TestClient, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/v2/health/ready").status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(client.get("/v2/health/ready").json())
        time.sleep(0.02)


@pytest.fixture(scope="module")
def client(tiny_artifact: Path) -> Iterator[TestClient]:
    """The real tiny model behind the real app, in process."""
    server = ModelServer(
        ServedModel(str(tiny_artifact), threads=1),
        ServerSettings(max_texts_per_request=4, max_chars=50, max_batch_wait_ms=0),
    )
    with TestClient(server.app) as test_client:
        wait_until_ready(test_client)
        yield test_client


def infer_body(texts: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "t", "shape": [len(texts)], "datatype": "BYTES", "data": texts}],
        **extra,
    }


def post_raw(client: TestClient, path: str, document: Any) -> httpx2.Response:
    # json.dumps keeps a lone surrogate as the escape \ud800, exactly what a client sends.
    return client.post(
        path, content=json.dumps(document).encode(), headers={"content-type": "application/json"}
    )


@pytest.mark.parametrize(
    ("path", "document", "message"),
    [
        ("/predict", {"texts": ["fine", "broken \ud800 text"]}, "texts[1] holds a lone surrogate"),
        (INFER, infer_body(["\udfff"]), "data[0] holds a lone surrogate"),
        (INFER, infer_body(["ok"], id="\ud800"), "id must be 1-256 printable ASCII"),
        (INFER, infer_body(["ok"], id="日本"), "id must be"),
        (INFER, infer_body(["ok"], id="a\r\nset-cookie: x=1"), "id must be"),
        (INFER, infer_body(["ok"], id="x" * 257), "id must be"),
        (INFER, infer_body(["ok"], id=7), "id must be a string"),
    ],
)
def test_text_and_ids_that_are_not_valid_text_get_400(
    client: TestClient, path: str, document: Any, message: str
) -> None:
    answer = post_raw(client, path, document)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]
    # The server is still fine afterwards.
    assert client.post("/predict", json={"texts": ["still here"]}).status_code == 200


def test_a_bad_request_id_header_gets_400_and_a_good_one_is_echoed(client: TestClient) -> None:
    refused = client.post("/predict", json={"texts": ["hi"]}, headers={b"x-request-id": b"caf\xe9"})
    assert refused.status_code == 400 and "x-request-id must be" in refused.json()["error"]
    answer = client.post("/predict", json={"texts": ["hi"]}, headers={"x-request-id": "req-7"})
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "req-7"
    # The OIP body's id is the client's correlation id: echoed in the body, not the id.
    answer = post_raw(client, INFER, infer_body(["hi"], id="order 42/a"))
    assert answer.status_code == 200 and answer.json()["id"] == "order 42/a"
    assert answer.headers["x-request-id"] != "order 42/a"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
        (b'{"texts": [' + b"7" * 5000 + b"]}", "invalid JSON"),
        (b'{"id": "' + b"\xff\xfe" + b'"}', "invalid JSON"),
    ],
)
def test_deep_json_and_huge_integers_are_400(client: TestClient, body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as error:
        parse_json(body)
    assert error.value.status == 400 and message in error.value.message
    answer = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and message in answer.json()["error"]


def test_the_body_has_an_absolute_ceiling(tiny_artifact: Path) -> None:
    at_crd_maxima = Limits(max_texts=4096, max_chars=1_000_000)
    assert at_crd_maxima.max_body_bytes == 4 << 20  # not ~24 GB
    settings = ServerSettings(
        max_texts_per_request=4096, max_chars=1_000_000, max_body_bytes=1 << 20
    )
    server = ModelServer(ServedModel(str(tiny_artifact), threads=1), settings)
    with TestClient(server.app) as test_client:
        answer = test_client.post(
            "/predict",
            content=b'{"texts": ["' + b"a" * (1 << 20) + b'"]}',
            headers={"content-type": "application/json"},
        )
    assert answer.status_code == 413
    assert "exceeds 1048576" in answer.json()["error"]


class Stub:
    """A classifier that fails on "boom", blocks on "block" and is otherwise neutral."""

    labels = LABELS

    def __init__(self, value: float = 0.5) -> None:
        self.value = value
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        if "boom" in texts:
            raise RuntimeError("the tokenizer choked")
        if "block" in texts:
            self.entered.set()
            self.release.wait(10)
        return [Prediction("neutral", self.value, [0.25, self.value, 0.25]) for _ in texts]

    def loader(self, _artifact: object, _threads: int | None) -> Stub:
        return self


def stub_server(artifact: Path, stub: Stub, **settings: Any) -> ModelServer:
    return ModelServer(
        ServedModel(str(artifact), loader=stub.loader),
        ServerSettings(**settings),
    )


def test_a_bad_request_fails_alone_not_its_batch(
    serve: Callable[..., LiveServer], tiny_artifact: Path
) -> None:
    server = stub_server(tiny_artifact, Stub(), max_batch_wait_ms=300)
    url = serve(server.app).url
    wait_ready(url)
    texts = ["fine", "boom", "also fine", "good"]
    results = fire(url, [{"path": "/predict", "json": {"texts": [t]}} for t in texts], 4)
    assert [r.status for r in results] == [200, 500, 200, 200]
    assert "the tokenizer choked" in results[1].body["error"]


def test_a_full_queue_answers_503_with_retry_after(
    serve: Callable[..., LiveServer], tiny_artifact: Path
) -> None:
    stub = Stub()
    server = stub_server(
        tiny_artifact,
        stub,
        max_batch_size=1,
        max_batch_wait_ms=0,
        max_queued_texts=1,
        max_texts_per_request=1,
    )
    url = serve(server.app).url
    wait_ready(url)
    answers: list[int] = []
    senders = [
        threading.Thread(
            target=lambda t=t: answers.append(
                httpx.post(url + "/predict", json={"texts": [t]}, timeout=30).status_code
            )
        )
        for t in ("block", "queued")
    ]
    senders[0].start()
    assert stub.entered.wait(10)
    senders[1].start()
    deadline = time.monotonic() + 10
    while server.batcher.queued_texts < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    refused = httpx.post(url + "/predict", json={"texts": ["too many"]})
    stub.release.set()
    for sender in senders:
        sender.join(10)
    assert refused.status_code == 503 and "busy" in refused.json()["error"]
    assert int(refused.headers["retry-after"]) >= 1
    assert answers == [200, 200]


def test_readiness_fails_when_the_inference_worker_is_dead(
    tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = stub_server(tiny_artifact, Stub(), max_batch_wait_ms=0)
    with TestClient(server.app) as test_client:
        wait_until_ready(test_client)

        def broken() -> list[object]:
            raise RuntimeError("bookkeeping bug")

        monkeypatch.setattr(server.batcher, "_take_batch", broken)
        answer = test_client.post("/predict", json={"texts": ["hi"]})
        assert answer.status_code == 503  # after the restarts gave up
        ready = test_client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert "inference worker stopped" in ready.json()["error"]
        assert test_client.get("/v2/models/tiny-v1/ready").status_code == 503


def test_a_model_with_nan_outputs_never_becomes_ready(tiny_artifact: Path) -> None:
    model = ServedModel(str(tiny_artifact), loader=Stub(float("nan")).loader)
    with pytest.raises(ModelOutputError, match="not finite"):
        model.load()
    assert not model.ready.is_set()

    failures: list[BaseException] = []
    model = ServedModel(str(tiny_artifact), loader=Stub(float("inf")).loader)
    server = ModelServer(model, on_load_error=failures.append)
    with TestClient(server.app) as test_client:
        deadline = time.monotonic() + 10
        while not failures and time.monotonic() < deadline:
            time.sleep(0.01)
        ready = test_client.get("/v2/health/ready")
    assert isinstance(failures[0], ModelOutputError)
    assert ready.status_code == 503 and "not finite" in ready.json()["error"]


def record(request_id: str, text: str = "t") -> PredictionRecord:
    return PredictionRecord(time.time(), "m", "v1", request_id, 0, text, "neutral", 0.5, 1.0)


def test_the_prediction_log_writer_survives_a_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    dropped: list[int] = []
    log = PredictionLog(path, "text", on_drop=dropped.append)
    log.write([record("ok-1"), record("\ud800"), record("ok-2", text="\udfff")])
    log.write([record("ok-3")])
    log.close(timeout=5)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["requestId"] for line in lines] == ["ok-1", "ok-3"]
    assert log.dropped == 2 and sum(dropped) == 2


def test_closing_the_prediction_log_never_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered = threading.Event()
    stuck = threading.Event()
    original = PredictionLog.line

    def slow_line(self: PredictionLog, rec: PredictionRecord) -> str:
        entered.set()
        stuck.wait(30)  # a writer stuck on a hung disk
        return original(self, rec)

    monkeypatch.setattr(PredictionLog, "line", slow_line)
    log = PredictionLog(tmp_path / "p.jsonl", "hash", queue_size=2)
    log.write([record("r0")])
    assert entered.wait(5)
    for i in range(1, 4):
        log.write([record(f"r{i}")])
    assert log.dropped == 1  # the queue is full
    closer = threading.Thread(target=log.close, kwargs={"timeout": 0.5})
    started = time.monotonic()
    closer.start()
    closer.join(5)
    blocked = closer.is_alive()
    stuck.set()
    # The writer is stuck for 30 s; a close that honours its 0.5 s timeout ends far
    # sooner, with room left for a loaded 2-core machine's scheduling.
    assert not blocked and time.monotonic() - started < 10


def test_uvicorn_limits_come_from_the_settings(
    tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_crd = ServerSettings.from_serving(Serving(max_batch_size=8, max_texts_per_request=200))
    assert from_crd.queue_limit == 200 and from_crd.concurrency_limit == 264
    assert ServerSettings().queue_limit == 512  # 16 batches of 32

    server = cli._run(object(), "127.0.0.1", 0, 5, False, 164, 3.0)
    assert server.config.limit_concurrency == 164 and server.config.timeout_keep_alive == 3
    captured: dict[str, Any] = {}

    class NoServer:
        should_exit = False

        def run(self) -> None:
            pass

    def fake_run(_app: object, *args: Any) -> NoServer:
        captured["args"] = args
        return NoServer()

    monkeypatch.setattr(cli, "_run", fake_run)
    result = CliRunner().invoke(
        cli.app,
        [
            "serve",
            "--model",
            str(tiny_artifact),
            "--max-queued-texts",
            "100",
            "--keep-alive-seconds",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert captured["args"][-2:] == (164, 3.0)
