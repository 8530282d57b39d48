"""Logs whose home is an object store, on the real S3 server (VersityGW, tests/s3.py): a
model server with its prediction log at ``s3://...`` and a gateway with its feedback log
there keep each log in a local spool and ship it (bertops.server.logship). The drift
check's own reader finds the predictions in the bucket, a retraining's own reader the
feedback rows; a line being written is never shipped torn; a file the rotation deleted is
deleted in the bucket; an outage of the store loses nothing once it is back; files of
writers that are gone are swept, the live writer's and other files kept."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import s3fs

from bertops.api.dataset import DataSource
from bertops.api.routes import Routes
from bertops.cluster.storage.run import Storage
from bertops.server.app import ModelServer, ServerSettings
from bertops.server.gateway.access import FeedbackAccess
from bertops.server.gateway.app import Gateway
from bertops.server.gateway.feedback import FeedbackLog
from bertops.server.jsonlog import rotate_stamped, segments
from bertops.server.logship import LogShipper, shipped_log, shipped_rotation, spool_location
from bertops.server.model import ServedModel
from bertops.server.monitor import MonitorInputError
from bertops.server.monitor.store import local_input
from bertops.server.predictionlog import PredictionLog, is_log_file, read_window
from bertops.trainer.io import read_source
from tests.s3 import needs_s3
from tests.server.conftest import LiveServer, wait_ready
from tests.server.helpers import Stub
from tests.waiting import wait_for

pytestmark = needs_s3


@pytest.fixture
def folder(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh folder in the bucket; logs ship every 0.2 s (the server's default is 10)."""
    monkeypatch.setenv("BERTOPS_LOG_SHIP_SECONDS", "0.2")
    return f"s3://bertops/logs-{uuid.uuid4().hex[:8]}"


def _store() -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(skip_instance_cache=True)


def _objects(uri: str) -> dict[str, bytes]:
    store = _store()
    root = uri.removeprefix("s3://")
    if not store.exists(root):
        return {}
    return {path.rpartition("/")[2]: store.cat_file(path) for path in store.find(root)}


def test_the_prediction_log_ships_to_s3_and_the_drift_window_reads_it(
    serve: Callable[..., LiveServer], tiny_artifact: Path, folder: str
) -> None:
    predictions = f"{folder}/predictions"
    settings = ServerSettings(prediction_log="hash", prediction_log_path=f"{predictions}/a.jsonl")
    model_server = ModelServer(ServedModel(str(tiny_artifact), threads=1), settings)
    server = serve(model_server.app)
    wait_ready(server.url)
    texts = [f"review number {number}: the soup was cold" for number in range(12)]
    assert httpx.post(server.url + "/predict", json={"texts": texts}).status_code == 200

    def window() -> list[dict[str, object]]:
        # The drift check's own reading: fetch the folder, then the bounded window.
        try:
            with local_input(predictions, "prediction logs", "NoPredictions") as local:
                return read_window(local, 100)[0]
        except MonitorInputError:  # nothing shipped yet
            return []

    rows = wait_for(lambda: len(found := window()) == len(texts) and found, timeout=30)
    hashes = {hashlib.sha256(text.encode()).hexdigest() for text in texts}
    assert {row["textSha256"] for row in rows} == hashes
    (name,) = _objects(predictions)  # one writer, one object: a.<start time>-<tag>.jsonl
    assert is_log_file(name) and name.startswith("a.2") and name.endswith(".jsonl")

    # Stopped cleanly: the last ship runs after the log's last flush; the spool is gone.
    assert model_server._log_shipper is not None
    assert model_server.prediction_log is not None and model_server.prediction_log.stamped
    spool = model_server._log_shipper.spool
    server.stop()
    assert not spool.exists()
    assert len(window()) == len(texts)


def test_whole_lines_are_shipped_and_each_segment_once(folder: str) -> None:
    path, remote = spool_location(f"{folder}/predictions/b.jsonl")
    assert remote == f"{folder}/predictions" and path.parent.stat().st_mode & 0o777 == 0o700
    owned = lambda name: PredictionLog.owns(path.name, name)  # noqa: E731
    shipper = LogShipper(remote, path.parent, owned)
    path.write_text('{"n": 1}\n{"n": 2}\n{"n": 3, "half')  # the writer is mid-line
    assert shipper.ship() == 1
    assert _objects(remote) == {path.name: b'{"n": 1}\n{"n": 2}\n'}
    assert shipper.ship() == 0  # nothing changed: nothing put

    # The shipped log's own rotation (stamped segments, two kept): each rotation puts the
    # new segment alone (names never change, so nothing is put again), and the segment
    # it dropped is deleted in the bucket too.
    path.with_name("someone-else.jsonl").write_text("{}\n")  # not this writer's: never put
    for generation in range(3):
        path.write_text(f'{{"g": {generation}}}\n')
        rotate_stamped(path, backups=2)
        assert shipper.ship() == 1
    kept = segments(path)
    assert len(kept) == 2 and set(_objects(remote)) == {p.name for p in kept}
    assert [_objects(remote)[p.name] for p in kept] == [b'{"g": 1}\n', b'{"g": 2}\n']


def test_an_outage_of_the_store_loses_nothing(
    folder: str, s3_store: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # a refused connection fails at once
    path, remote = spool_location(f"{folder}/feedback/feedback.jsonl")
    assert remote is not None
    shipper = LogShipper(remote, path.parent, lambda name: FeedbackLog.owns(path.name, name))
    path.write_text('{"text": "one", "label": "positive"}\n')
    shipper.ship_quietly()
    s3_store.down()
    try:
        with path.open("a") as handle:
            handle.write('{"text": "two", "label": "negative"}\n')
        shipper.ship_quietly()  # logged once, counted, the spool kept
        assert shipper.failures == 1 and path.exists()
    finally:
        s3_store.up()
    shipper.close()
    assert _objects(remote)[path.name].count(b"\n") == 2
    assert not path.parent.exists()  # shipped: the spool is removed


def test_stale_writers_are_swept_and_the_live_one_kept(folder: str) -> None:
    remote = f"{folder}/predictions"
    store = _store()
    root = remote.removeprefix("s3://")
    for name in ("gone-pod.jsonl", "gone-pod.jsonl.1", "notes.txt"):
        store.pipe_file(f"{root}/{name}", b"{}\n")
    path, _ = spool_location(f"{remote}/live.jsonl")
    shipper = LogShipper(remote, path.parent, lambda name: PredictionLog.owns(path.name, name))
    path.write_text("{}\n")
    shipper.ship()
    time.sleep(1.1)  # S3 keeps whole seconds
    assert shipper.sweep(is_log_file, retention_seconds=0) == 2
    assert set(_objects(remote)) == {"notes.txt", path.name}


def test_feedback_ships_to_s3_and_a_retraining_reads_it(
    serve: Callable[..., LiveServer], folder: str
) -> None:
    stub = serve(Stub("v1", "positive").app()).url
    labels = ["positive", "negative", "neutral"]
    table = Routes.model_validate({"stable": {"name": "v1", "url": stub, "labels": labels}})
    feedback = f"{folder}/feedback"
    gateway = Gateway(
        table, feedback_log=f"{feedback}/feedback.jsonl", feedback_access=FeedbackAccess.open()
    )
    url = serve(gateway.app).url
    with httpx.Client(base_url=url) as client:
        answer = client.post("/predict", json={"texts": ["great food", "cold soup ☹"]})
        sent = client.post(
            "/feedback",
            json={"requestId": answer.headers["x-request-id"], "labels": ["positive", "negative"]},
        )
        assert sent.json() == {"accepted": 2, "duplicates": 0}
    # The source a retraining appends (operator/deployment/retrain.py), read by the trainer.
    source = DataSource(uri=feedback, format="jsonl", optional=True)

    def pairs() -> list[tuple[str, str]]:
        frame = read_source(source).frame
        return sorted(zip(frame["text"], frame["label"], strict=True))

    assert wait_for(lambda: len(found := pairs()) == 2 and found, timeout=30) == [
        ("cold soup ☹", "negative"),
        ("great food", "positive"),
    ]
    rows = [json.loads(line) for line in next(iter(_objects(feedback).values())).splitlines()]
    assert {row["model"] for row in rows} == {"v1"}


def test_a_local_location_is_written_in_place(tmp_path: Path) -> None:
    path, shipper = shipped_log(str(tmp_path / "p.jsonl"), PredictionLog.owns, "prediction log")
    assert path == tmp_path / "p.jsonl" and shipper is None
    assert shipped_rotation(64 << 20, 5) == (8 << 20, 47)  # same total, smaller puts
    assert shipped_rotation(1 << 20, 5) == (1 << 20, 5)
