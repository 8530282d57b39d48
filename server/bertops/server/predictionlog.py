"""The prediction log: one JSON line per prediction, written by the model server for
drift monitoring, and :func:`read_window`, which the drift check uses to read the most
recent ones back.

Written by :mod:`bertops.server.app` after each answered request, through
:class:`PredictionLog` (a :class:`bertops.server.jsonlog.JsonLinesLog`: a background
writer that never blocks a request, rotating files by size: ``<id>.jsonl``, ``.1``,
``.2``, ...). Read by the drift check (``bertops.server.monitor``) with
:func:`read_window`. Several server replicas write separate files into one folder
(``<artifact root>/<namespace>/deployments/<name>/predictions/<server or pod>.jsonl``).
Files of writers that are gone (replaced pods, retired model versions) are deleted once
unwritten for :data:`RETENTION_SECONDS` (:func:`sweep_stale`, run when a server starts
and when it rotates), so the folder holds about ``(backups + 1) * max_bytes`` per live
writer.

The line format (the contract the drift check reads; UTF-8, one JSON object a line)::

    {"time": "2026-11-28T23:05:01.123+00:00",   # UTC, ISO 8601, milliseconds
     "model": "sentiment-v3",                   # the served model (BertModel) name
     "modelVersion": "sentiment-v3",            # the artifact's version
     "requestId": "4f1c...", "index": 0,        # the request and the text's place in it
     "variant": "canary",                       # only when the gateway named one
     "textSha256": "9b1e...",                   # privacy "hash" (the default) ...
     "text": "the raw text",                    # ... or privacy "text"; never both
     "chars": 42, "tokens": 12,                 # descriptors, see descriptors.describe
     "unkRate": 0.0, "nonAscii": 0.02,
     "label": "positive", "confidence": 0.931,  # the answer (confidence: 6 decimals)
     "latencyMs": 12.5,                         # the request's latency in the server
     "embedding": [0.0123, -0.4567, ...]}       # mean-pooled last hidden state, 4 decimals

``tokens`` and ``unkRate`` are absent when the classifier reports no token counts, and
``embedding`` is absent when the model exposes no hidden state (an ONNX graph exported
with logits only). With privacy ``hash`` no raw text is kept anywhere in the line.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from bertops.server.descriptors import describe
from bertops.server.jsonlog import JsonLinesLog, rotate

__all__ = ["PredictionLog", "PredictionRecord", "Privacy", "read_window", "rotate"]

log = logging.getLogger(__name__)

Privacy = Literal["text", "hash", "off"]

EMBEDDING_DECIMALS = 4
MAX_LINE_BYTES = 256 << 10
"""Longest line :func:`read_window` reads (a 1024-float embedding plus a 5000-character
text is about 50 KiB); a longer one is skipped without being held in memory."""
READ_CHUNK = 64 << 10
LOG_FILE = re.compile(r".+\.jsonl(\.\d+)?")


def is_log_file(name: str) -> bool:
    """A prediction log file's name (``*.jsonl`` or a rotation ``*.jsonl.N``)."""
    return LOG_FILE.fullmatch(name) is not None


RETENTION_SECONDS = 72 * 3600
"""A prediction log file nobody appended to for this long (a replaced pod's, a retired
model version's) is deleted by the next server of the folder that starts or rotates."""


def sweep_stale(folder: Path, retention_seconds: float) -> int:
    """Delete the prediction log files in ``folder`` last written before the retention
    (each live writer appends to its own file, so its mtime stays fresh); the count."""
    horizon = datetime.now(UTC).timestamp() - retention_seconds
    removed = 0
    for path in folder.iterdir() if folder.is_dir() else ():
        try:
            if LOG_FILE.fullmatch(path.name) and path.stat().st_mtime < horizon:
                path.unlink()
                removed += 1
        except OSError as error:  # another replica removed it first, or no right to
            log.debug("cannot remove stale prediction log %s: %s", path, error)
    if removed:
        log.info(
            "removed %d prediction log file(s) in %s unwritten for %.0f h",
            removed,
            folder,
            retention_seconds / 3600,
        )
    return removed


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
    tokens: int | None = None
    unknown_tokens: int | None = None
    embedding: list[float] | None = None


class PredictionLog(JsonLinesLog[PredictionRecord]):
    """The prediction log file; see the module docstring for its lines."""

    what = "prediction log"

    def __init__(
        self,
        path: Path,
        privacy: Privacy = "hash",
        *,
        max_bytes: int = 64 << 20,
        backups: int = 5,
        queue_size: int = 100_000,
        on_drop: Callable[[int], None] | None = None,
        retention_seconds: float = RETENTION_SECONDS,
        stamped: bool = False,
    ) -> None:
        if privacy == "off":
            raise ValueError("privacy 'off' means no prediction log; do not create one")
        self.privacy = privacy
        super().__init__(
            path,
            max_bytes=max_bytes,
            backups=backups,
            queue_size=queue_size,
            on_drop=on_drop,
            stamped=stamped,
        )
        self.retention_seconds = retention_seconds
        self.removed = sweep_stale(path.parent, retention_seconds)

    def rotate(self) -> None:
        super().rotate()
        self.removed += sweep_stale(self.path.parent, self.retention_seconds)

    def line(self, record: PredictionRecord) -> str:
        # Runs on the writer thread: hashing, descriptors and rounding cost no request.
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
        document.update(describe(record.text, record.tokens, record.unknown_tokens))
        document["label"] = record.label
        document["confidence"] = round(record.confidence, 6)
        document["latencyMs"] = round(record.latency_ms, 3)
        if record.embedding is not None:
            document["embedding"] = [round(x, EMBEDDING_DECIMALS) for x in record.embedding]
        return json.dumps(document, ensure_ascii=False) + "\n"


# -- reading -------------------------------------------------------------------------------

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "time": str,
    "model": str,
    "modelVersion": str,
    "label": str,
    "confidence": (int, float),
    "chars": int,
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "tokens": int,
    "unkRate": (int, float),
    "nonAscii": (int, float),
    "variant": str,
    "text": str,
    "textSha256": str,
}


def _valid(raw: bytes | None) -> tuple[float, dict[str, Any]] | None:
    """(timestamp, row) of one line, or None when it is not a valid row."""
    if raw is None:
        return None
    try:
        row = json.loads(raw)
        if not isinstance(row, dict):
            return None
        for key, kind in _REQUIRED.items():
            value = row.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                return None
        for key, kind in _OPTIONAL.items():
            if key in row and (not isinstance(row[key], kind) or isinstance(row[key], bool)):
                return None
        embedding = row.get("embedding")
        if embedding is not None and not (
            isinstance(embedding, list)
            and embedding
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in embedding)
        ):
            return None
        moment = datetime.fromisoformat(row["time"])
    except (ValueError, RecursionError):  # JSON, UTF-8 and time format errors alike
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp(), row


def _lines_backwards(path: Path, chunk: int | None = None) -> Iterator[bytes | None]:
    """The lines of a file, last first, read in chunks (:data:`READ_CHUNK`) from its
    end; None for a line longer than :data:`MAX_LINE_BYTES` (never held whole). Empty
    lines are skipped."""
    chunk = chunk or READ_CHUNK
    with path.open("rb") as handle:
        position = handle.seek(0, 2)
        current, too_long = b"", False
        while position > 0:
            size = min(chunk, position)
            position -= size
            handle.seek(position)
            parts = handle.read(size).split(b"\n")
            for index in range(len(parts) - 1, -1, -1):
                if index < len(parts) - 1:  # a newline: the line collected so far is whole
                    if too_long or current:
                        yield None if too_long else current
                    current, too_long = b"", False
                if not too_long:
                    current = parts[index] + current
                    if len(current) > MAX_LINE_BYTES:
                        current, too_long = b"", True
        if too_long or current:
            yield None if too_long else current


def _log_files(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if LOG_FILE.fullmatch(p.name) and p.is_file()]
    except FileNotFoundError:
        return []


def read_window(
    folder: Path, limit: int, model: str | None = None
) -> tuple[list[dict[str, Any]], int]:
    """The newest ``limit`` valid rows of every prediction log in ``folder`` (``*.jsonl``
    and rotated ``*.jsonl.N``, one chain per server replica), newest first by their
    ``time``, only those of ``model`` when given; and the number of lines skipped as
    unreadable (corrupt JSON, missing fields, wrong types, longer than
    :data:`MAX_LINE_BYTES`).

    Bounded: each file is read backwards in chunks and the files are merged by time, so
    reading stops once ``limit`` rows are found (about one chunk per file beyond them);
    only counted lines were read. A missing folder reads as no rows. Rows of another
    model are neither returned nor counted as skipped.
    """
    if limit <= 0:
        return [], 0
    skipped = 0

    def rows(path: Path) -> Generator[tuple[float, dict[str, Any]], None, None]:
        nonlocal skipped
        try:
            for raw in _lines_backwards(path):
                found = _valid(raw)
                if found is None:
                    skipped += 1
                elif model is None or found[1]["model"] == model:
                    yield found
        except OSError as error:  # rotated away or unreadable: the others still count
            log.warning("cannot read prediction log %s: %s", path, error)

    streams = [rows(path) for path in _log_files(folder)]
    window: list[dict[str, Any]] = []
    for _, row in heapq.merge(*streams, key=lambda found: -found[0]):
        window.append(row)
        if len(window) >= limit:
            break
    for stream in streams:
        stream.close()  # closes the files of streams the merge left half read
    return window, skipped
