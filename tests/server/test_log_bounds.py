"""The disk and memory the loop's logs take are bounded: the feedback log rotates into
``*.jsonl`` segments a retraining still reads and keeps only the newest; prediction log
files of writers that are gone are deleted after the retention; and ``prepare`` reads a
large feedback log line by line, keeping only the columns it needs."""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from pathlib import Path

from bertops.api.dataset import DataSource
from bertops.server.gateway.feedback import FeedbackLog
from bertops.server.predictionlog import PredictionLog
from bertops.trainer.io import read_source


def row(i: int, filler: int = 200) -> dict[str, object]:
    return {
        "time": f"2026-12-07T10:{i // 60 % 60:02d}:{i % 60:02d}.000+00:00",
        "requestId": f"{i:032x}",
        "index": 0,
        "text": f"text {i} " + "x" * filler,
        "label": ("negative", "positive")[i % 2],
        "variant": "stable",
        "model": "v1",
        "predicted": "positive",
        "correct": i % 2 == 1,
        "client": "labeler",
    }


def feedback_source(folder: Path) -> DataSource:
    return DataSource.model_validate(
        {"uri": str(folder), "format": "jsonl", "textColumn": "text", "labelColumn": "label"}
    )


def test_the_feedback_log_rotates_into_segments_the_retraining_reads(tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    log = FeedbackLog(folder / "gw-0.jsonl", max_bytes=20_000, segments=3)
    for start in range(0, 600, 50):
        log.write([row(i) for i in range(start, start + 50)])
    log.close()
    files = sorted(p.name for p in folder.iterdir())
    segments = [name for name in files if name != "gw-0.jsonl"]
    assert len(segments) == 3 and all(name.startswith("gw-0.2") for name in segments), files
    assert all(name.endswith(".jsonl") for name in files)
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 4 * 20_000
    kept = [
        json.loads(line) for p in sorted(folder.iterdir()) for line in p.read_text().splitlines()
    ]
    numbers = sorted(int(str(r["requestId"]), 16) for r in kept)
    assert numbers == list(range(600 - len(numbers), 600))  # the newest rows, none twice
    raw = read_source(feedback_source(folder))  # what a retraining's prepare step reads
    assert raw.rows_read == len(kept) and sorted(raw.frame["text"]) == sorted(
        str(r["text"]) for r in kept
    )


def test_prediction_logs_of_writers_that_are_gone_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "predictions"
    folder.mkdir()
    old = time.time() - 4 * 86400
    for name in ("web-v1-gone.jsonl", "web-v1-gone.jsonl.1", "web-v1-gone.jsonl.2"):
        (folder / name).write_text("{}\n")
        os.utime(folder / name, (old, old))
    (folder / "web-v1-live.jsonl").write_text("{}\n")  # another replica, still writing
    (folder / "notes.txt").write_text("not a log")
    os.utime(folder / "notes.txt", (old, old))
    log = PredictionLog(folder / "web-v1-new.jsonl", retention_seconds=3 * 86400)
    log.close()
    assert log.removed == 3
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "web-v1-live.jsonl"]


def test_prepare_reads_a_large_feedback_log_without_holding_it(tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    folder.mkdir()
    rows = 20_000
    with (folder / "gw-0.jsonl").open("w") as handle:
        for i in range(rows):
            handle.write(json.dumps(row(i, filler=400)) + "\n")
    size = (folder / "gw-0.jsonl").stat().st_size
    tracemalloc.start()
    raw = read_source(feedback_source(folder))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert raw.rows_read == rows and list(raw.frame.columns[:2]) == ["text", "label"]
    # Holding the file, its text and every row's ten fields took several times its size.
    assert peak < 1.5 * size, (peak, size)
