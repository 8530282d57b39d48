"""read_window: the newest valid prediction-log rows of a folder written by several
server replicas, across rotated files, skipping (and counting) unreadable lines, and
reading no more than it needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bertops.server import predictionlog
from bertops.server.predictionlog import PredictionLog, PredictionRecord, read_window


def record(second: float, request_id: str, model: str = "m1") -> PredictionRecord:
    return PredictionRecord(
        1_800_000_000 + second, model, "v1", request_id, 0, "some text", "pos", 0.9, 1.0,
        tokens=4, unknown_tokens=0, embedding=[0.1, 0.2],
    )  # fmt: skip


def write(path: Path, records: list[PredictionRecord], **options: Any) -> None:
    log = PredictionLog(path, "hash", **options)
    for one in records:  # one batch each, so rotation can happen between them
        log.write([one])
    log.close()


def ids(rows: list[dict[str, object]]) -> list[object]:
    return [row["requestId"] for row in rows]


def test_newest_first_across_replicas_and_rotations(tmp_path: Path) -> None:
    # Replica a writes even seconds, replica b odd ones; a rotates several times.
    write(tmp_path / "a.jsonl", [record(s, f"a{s}") for s in range(0, 40, 2)], max_bytes=1200)
    write(tmp_path / "b.jsonl", [record(s, f"b{s}") for s in range(1, 40, 2)])
    assert (tmp_path / "a.jsonl.1").exists() and (tmp_path / "a.jsonl.2").exists()
    (tmp_path / "notes.txt").write_text("not a log\n")
    rows, skipped = read_window(tmp_path, 5)
    assert ids(rows) == ["b39", "a38", "b37", "a36", "b35"] and skipped == 0
    everything, _ = read_window(tmp_path, 1000)
    kept = {f"a{s}" for s in range(0, 40, 2)} - set(ids(everything))
    times = [row["time"] for row in everything]
    assert times == sorted(times, reverse=True)
    # Rotation keeps 5 backups of a: its oldest rows may be gone, never reordered.
    assert len(everything) == 40 - len(kept)
    assert everything[0]["embedding"] == [0.1, 0.2] and everything[0]["tokens"] == 4


def test_unreadable_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write(path, [record(1, "old"), record(5, "new")])
    good = path.read_text().splitlines()
    bad = [
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({**json.loads(good[0]), "confidence": "high"}),  # wrong type
        json.dumps({k: v for k, v in json.loads(good[0]).items() if k != "label"}),  # missing
        json.dumps({**json.loads(good[0]), "time": "yesterday"}),
        json.dumps({**json.loads(good[0]), "embedding": ["x"]}),
        json.dumps({**json.loads(good[0]), "chars": True}),  # a bool is no count
        "x" * (predictionlog.MAX_LINE_BYTES + 10),  # over the cap: never held whole
        "\xff\xfe broken utf-8",
    ]
    with path.open("w", encoding="utf-8", errors="surrogateescape") as handle:
        handle.write("\n".join([good[0], *bad, "", good[1], "{half a li"]))
    rows, skipped = read_window(tmp_path, 10)
    assert ids(rows) == ["new", "old"]
    assert skipped == len(bad) + 1  # and the torn last line


def test_filter_by_model_and_stop_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predictionlog, "READ_CHUNK", 256)
    path = tmp_path / "a.jsonl"
    write(path, [record(s, f"r{s}", "m1" if s % 3 else "m2") for s in range(30)])
    with path.open("r+", encoding="utf-8") as handle:  # corrupt the oldest line
        handle.write("x")
    rows, skipped = read_window(tmp_path, 4, model="m2")
    assert ids(rows) == ["r27", "r24", "r21", "r18"]
    assert skipped == 0  # the corrupt line at the start was never read
    rows, skipped = read_window(tmp_path, 100, model="m2")
    assert len(rows) == 9 and skipped == 1  # r0 was the corrupted one
    assert read_window(tmp_path / "missing", 10) == ([], 0)
    assert read_window(tmp_path, 0) == ([], 0)


def test_reads_backwards_across_chunk_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write(path, [record(s, f"r{s}") for s in range(50)])
    lines = path.read_bytes().split(b"\n")
    for chunk in (7, 64, 333, 4096):
        got = list(predictionlog._lines_backwards(path, chunk))
        assert got == [line for line in reversed(lines) if line]
