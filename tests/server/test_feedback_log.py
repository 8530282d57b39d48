"""Labelled feedback persisted for retraining: with ``--feedback-log`` the gateway keeps
the texts of its answers (within its memory budget) and appends one row per accepted
label, raw text included, from a background writer; rejected and duplicate feedback
writes nothing, and without the flag no text is remembered at all."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bertops.api.routes import Routes
from bertops.server.gateway.access import FeedbackAccess
from bertops.server.gateway.app import Gateway
from bertops.server.gateway.served import Served
from tests.server.conftest import LiveServer
from tests.server.helpers import Stub

LABELS = ["positive", "negative", "neutral"]


def rows(path: Path, count: int, timeout: float = 10) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout  # the writer is a background thread
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            break
        time.sleep(0.02)
    return [json.loads(line) for line in path.read_text().splitlines()]


def start(serve: Callable[..., LiveServer], feedback_log: Path | None) -> tuple[Gateway, str]:
    stub = serve(Stub("v1", "positive").app()).url
    table = Routes.model_validate({"stable": {"name": "v1", "url": stub, "labels": LABELS}})
    gateway = Gateway(table, feedback_log=feedback_log, feedback_access=FeedbackAccess.open())
    return gateway, serve(gateway.app).url


def test_accepted_feedback_is_written_with_its_text(
    serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    path = tmp_path / "feedback" / "feedback.jsonl"
    gateway, url = start(serve, path)
    with httpx.Client(base_url=url) as client:
        plain = client.post("/predict", json={"texts": ["great food", "cold soup ☹"]})
        infer = client.post(
            "/v2/models/v1/infer",
            json={"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["meh"]}]},
        )
        first, second = plain.headers["x-request-id"], infer.headers["x-request-id"]
        served = gateway.served.get(first)
        assert served is not None
        assert served.texts == ("great food", "cold soup ☹")
        sent = client.post(
            "/feedback",
            json=[
                {"requestId": first, "labels": ["positive", "negative"]},
                {"requestId": second, "label": "neutral"},
            ],
        )
        assert sent.json() == {"accepted": 3, "duplicates": 0}
        # Rejected (unknown id, unknown label) and duplicate feedback writes nothing.
        assert client.post("/feedback", json={"requestId": "nope", "label": "x"}).status_code == 404
        bad = client.post("/feedback", json={"requestId": first, "label": "great"})
        assert bad.status_code == 422
        again = client.post("/feedback", json={"requestId": second, "label": "neutral"})
        assert again.json() == {"accepted": 0, "duplicates": 1}
    written = rows(path, 3)
    assert [(r["text"], r["label"]) for r in written] == [
        ("great food", "positive"),
        ("cold soup ☹", "negative"),
        ("meh", "neutral"),
    ]
    assert [r["requestId"] for r in written] == [first, first, second]
    assert {"index", "variant", "model", "time"} <= set(written[0])
    assert written[1]["index"] == 1 and written[0]["model"] == "v1"
    time.sleep(0.2)
    assert len(rows(path, 3)) == 3  # nothing more arrived late


def test_without_a_feedback_log_no_text_is_remembered(
    serve: Callable[..., LiveServer],
) -> None:
    gateway, url = start(serve, None)
    answer = httpx.post(url + "/predict", json={"texts": ["private"]})
    remembered = gateway.served.get(answer.headers["x-request-id"])
    assert remembered is not None and remembered.texts is None


def test_remembered_texts_count_in_the_memory_budget() -> None:
    from bertops.api.routes import Backend

    backend = Backend(name="v1", url="http://x")
    without = Served("stable", backend, ("positive",), 0.0)
    with_text = Served("stable", backend, ("positive",), 0.0, texts=("x" * 10_000,))
    assert with_text.text_cost - without.text_cost >= 10_000
    assert with_text.cost == without.cost  # the texts have a budget of their own
