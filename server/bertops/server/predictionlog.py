"""The prediction log: one JSON line per prediction (time, model version, request id,
the text or its sha256 per the privacy setting, label, confidence, latency), read later by
the drift monitor. Files rotate by size (``predictions.jsonl``, ``.1``, ``.2``, ...).

Written by :mod:`bertops.server.app` after each answered request. ``write`` never blocks
a request: records go to a bounded queue and a writer thread serialises, hashes and
appends them; when the queue is full records are dropped and counted. A record that
cannot be written (not serialisable, a full disk) is dropped and counted too: the writer
thread never dies of one. ``close`` (at shutdown) writes everything queued and flushes,
and returns within its timeout even when the writer is stuck.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

log = logging.getLogger(__name__)

Privacy = Literal["text", "hash", "off"]


@dataclass(frozen=True)
class PredictionRecord:
    time: float
    model: str
    model_version: str
    request_id: str
    index: int
    text: str
    label: str
    confidence: float
    latency_ms: float
    variant: str | None = None


def rotate(path: Path, backups: int) -> None:
    """path -> path.1 -> path.2 ... keeping ``backups`` old files."""
    oldest = path.with_name(f"{path.name}.{backups}")
    oldest.unlink(missing_ok=True)
    for number in range(backups - 1, 0, -1):
        source = path.with_name(f"{path.name}.{number}")
        if source.exists():
            source.rename(path.with_name(f"{path.name}.{number + 1}"))
    if path.exists():
        path.rename(path.with_name(f"{path.name}.1"))


class PredictionLog:
    """Appends records as JSON lines from a background thread; see the module docstring."""

    _STOP = object()

    def __init__(
        self,
        path: Path,
        privacy: Privacy = "hash",
        *,
        max_bytes: int = 64 << 20,
        backups: int = 5,
        queue_size: int = 100_000,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        if privacy == "off":
            raise ValueError("privacy 'off' means no prediction log; do not create one")
        self.path = path
        self.privacy = privacy
        self.max_bytes = max_bytes
        self.backups = backups
        self.dropped = 0
        self.written = 0
        self._on_drop = on_drop
        self._last_warning = -60.0
        self._handle: IO[str] | None = None
        self._size = 0
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def write(self, records: list[PredictionRecord]) -> None:
        """Queue records; never waits (drops and counts them when the queue is full)."""
        try:
            self._queue.put_nowait(records)
        except queue.Full:
            self._drop(len(records), "the writer is behind (queue full)")

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, flush, stop the thread; gives up after ``timeout``
        seconds (a stuck writer must not block shutdown; what is left is lost, and said)."""
        deadline = time.monotonic() + timeout
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):  # then the join below times out too
                self._queue.put(self._STOP, timeout=timeout)
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.error(
                "prediction log writer did not finish within %ss; about %d queued batches are lost",
                timeout,
                self._queue.qsize(),
            )

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        if self._on_drop is not None:
            self._on_drop(count)
        now = time.monotonic()
        if now - self._last_warning >= 60.0:  # at most a line a minute, not one a record
            self._last_warning = now
            log.warning(
                "prediction log dropped %d record(s): %s (%d dropped so far)",
                count,
                reason,
                self.dropped,
            )

    def line(self, record: PredictionRecord) -> str:
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.time, UTC).isoformat(timespec="milliseconds"),
            "model": record.model,
            "modelVersion": record.model_version,
            "requestId": record.request_id,
            "index": record.index,
        }
        if record.variant is not None:
            document["variant"] = record.variant
        if self.privacy == "text":
            document["text"] = record.text
        else:
            document["textSha256"] = hashlib.sha256(record.text.encode()).hexdigest()
        document["chars"] = len(record.text)
        document["label"] = record.label
        document["confidence"] = round(record.confidence, 6)
        document["latencyMs"] = round(record.latency_ms, 3)
        return json.dumps(document, ensure_ascii=False) + "\n"

    def _run(self) -> None:
        try:
            while True:
                pending, stop = self._take()
                for records in pending:
                    try:
                        self._append(records)
                    except Exception as error:  # a bug must cost records, not the thread
                        log.exception("prediction log writer failed on a batch")
                        self._drop(len(records), f"{type(error).__name__}: {error}")
                self._flush()
                if stop:
                    return
        finally:
            self._close_file()

    def _take(self) -> tuple[list[list[PredictionRecord]], bool]:
        """The next batch and whatever else is queued (so one flush serves them all:
        cheap under load, and the file is current whenever the queue is empty)."""
        first = self._queue.get()
        if first is self._STOP:
            return [], True
        pending: list[list[PredictionRecord]] = [first]  # type: ignore[list-item]
        while True:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                return pending, False
            if more is self._STOP:
                return pending, True
            pending.append(more)  # type: ignore[arg-type]

    def _append(self, records: list[PredictionRecord]) -> None:
        for record in records:
            try:
                text = self.line(record)
                data = text.encode("utf-8")  # fails on a lone surrogate: refuse it here
            except ValueError as error:
                self._drop(1, f"unwritable record: {error}")
                continue
            try:
                self._write(text, len(data))
            except OSError as error:
                self._close_file()  # reopened for the next record
                self._drop(1, f"cannot write {self.path}: {error}")

    def _write(self, text: str, encoded: int) -> None:
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
            self._size = self.path.stat().st_size
        if self._size and self._size + encoded > self.max_bytes:
            self._close_file()
            rotate(self.path, self.backups)
            self._handle = self.path.open("a", encoding="utf-8")
            self._size = 0
        self._handle.write(text)
        self._size += encoded
        self.written += 1

    def _flush(self) -> None:
        if self._handle is None:
            return
        try:
            self._handle.flush()
        except OSError as error:
            log.warning("cannot flush %s: %s", self.path, error)
            self._close_file()

    def _close_file(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError as error:
                log.warning("cannot close %s: %s", self.path, error)
