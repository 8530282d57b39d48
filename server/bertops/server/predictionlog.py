"""The prediction log: one JSON line per prediction (time, model version, request id,
the text or its sha256 per the privacy setting, label, confidence, latency), read later by
the drift monitor. Files rotate by size (``predictions.jsonl``, ``.1``, ``.2``, ...).

Written by :mod:`bertops.server.app` after each answered request. ``write`` never blocks
a request: records go to a bounded queue and a writer thread serialises, hashes and
appends them; when the queue is full records are dropped and counted. ``close`` (at
shutdown) writes everything queued and flushes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
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
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def write(self, records: list[PredictionRecord]) -> None:
        """Queue records; never waits (drops and counts them when the queue is full)."""
        try:
            self._queue.put_nowait(records)
        except queue.Full:
            self.dropped += len(records)
            if self._on_drop is not None:
                self._on_drop(len(records))

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, flush, stop the thread."""
        self._queue.put(self._STOP)
        self._thread.join(timeout)

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

    def _open(self) -> IO[str]:
        return self.path.open("a", encoding="utf-8")

    def _run(self) -> None:
        handle = self._open()
        size = self.path.stat().st_size
        try:
            while True:
                batch = self._queue.get()
                stop = batch is self._STOP
                pending = [] if stop else [batch]
                # Drain whatever else is queued, then flush once: cheap under load,
                # and the file is current whenever the queue is empty.
                while not stop:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is self._STOP:
                        stop = True
                    else:
                        pending.append(more)
                for records in pending:
                    for record in records:  # type: ignore[attr-defined]
                        text = self.line(record)
                        encoded = len(text.encode())
                        if size and size + encoded > self.max_bytes:
                            handle.close()
                            rotate(self.path, self.backups)
                            handle = self._open()
                            size = 0
                        handle.write(text)
                        size += encoded
                        self.written += 1
                handle.flush()
                if stop:
                    return
        except Exception:
            log.exception("prediction log writer failed; records from now on are lost")
        finally:
            handle.close()
