"""A JSON-lines file appended from a background thread: the one writer behind the
model server's prediction log (:class:`bertops.server.predictionlog.PredictionLog`) and
the gateway's labelled-feedback log (:class:`bertops.server.gateway.feedback.FeedbackLog`).

``write`` never blocks its caller (an event loop): records go to a bounded queue and a
writer thread turns them into lines (:meth:`JsonLinesLog.line`, given by the subclass)
and appends them; when the queue is full records are dropped and counted. A record that
cannot be written (not serialisable, a full disk) is dropped and counted too: the
writer thread never dies of one. Files rotate by size (``name``, ``name.1``, ``name.2``,
..., or with ``stamped`` into segments named by their UTC time, whose names never change,
as a log shipped to an object store needs) unless ``max_bytes`` is None. ``close`` (at
shutdown) writes everything queued and flushes, and returns within its timeout even
when the writer is stuck.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


STAMP = "%Y%m%dT%H%M%S%fZ"
"""A stamped segment's UTC time (microseconds: two rotations never share a name)."""
_STAMPED = r"\.\d{8}T\d{12}Z"


def segments(path: Path) -> list[Path]:
    """The stamped segments of the log ``path`` (``<stem>.<UTC time><suffix>``), oldest
    first (the times sort by name)."""
    pattern = re.compile(re.escape(path.stem) + _STAMPED + re.escape(path.suffix))
    found = path.parent.glob(f"{path.stem}.*{path.suffix}") if path.parent.is_dir() else []
    return sorted(p for p in found if pattern.fullmatch(p.name))


def rotate_stamped(path: Path, backups: int) -> None:
    """path -> ``<stem>.<UTC time><suffix>``, keeping the ``backups`` newest segments. A
    segment's name never changes again, so a log shipper puts each one once."""
    stamp = datetime.now(UTC).strftime(STAMP)
    path.rename(path.with_name(f"{path.stem}.{stamp}{path.suffix}"))
    for old in segments(path)[:-backups] if backups > 0 else segments(path):
        old.unlink(missing_ok=True)


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


class JsonLinesLog(Generic[T]):
    """Appends records as JSON lines from a background thread; see the module docstring.
    ``what`` names the log in warnings."""

    _STOP = object()
    what = "json-lines log"

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int | None = 64 << 20,
        backups: int = 5,
        queue_size: int = 100_000,
        on_drop: Callable[[int], None] | None = None,
        stamped: bool = False,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.stamped = stamped  # rotate into stamped segments (rotate_stamped)
        self.dropped = 0
        self.written = 0
        self._on_drop = on_drop
        self._last_warning = -60.0
        self._handle: IO[str] | None = None
        self._size = 0
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(
            target=self._run, name=self.what.replace(" ", "-"), daemon=True
        )
        self._thread.start()

    def write(self, records: list[T]) -> None:
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
                "%s writer did not finish within %ss; about %d queued batches are lost",
                self.what,
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
                "%s dropped %d record(s): %s (%d dropped so far)",
                self.what,
                count,
                reason,
                self.dropped,
            )

    @staticmethod
    def owns(base: str, name: str) -> bool:
        """Whether ``name`` is one of the files of a log named ``base``: itself, a numbered
        rotation (``base.1``, ...) or a stamped segment. What a log shipper ships."""
        number = name.removeprefix(f"{base}.")
        path = Path(base)
        stamped = re.escape(path.stem) + _STAMPED + re.escape(path.suffix)
        return (
            name == base
            or (number != name and number.isdigit())
            or re.fullmatch(stamped, name) is not None
        )

    def rotate(self) -> None:
        """Move the full file aside (on the writer thread): numbered (:func:`rotate`), or
        into a stamped segment (:func:`rotate_stamped`)."""
        if self.stamped:
            rotate_stamped(self.path, self.backups)
        else:
            rotate(self.path, self.backups)

    def line(self, record: T) -> str:
        """One record as its JSON line (ending in a newline); runs on the writer thread."""
        raise NotImplementedError

    def _run(self) -> None:
        try:
            while True:
                pending, stop = self._take()
                for records in pending:
                    try:
                        self._append(records)
                    except Exception as error:  # a bug must cost records, not the thread
                        log.exception("%s writer failed on a batch", self.what)
                        self._drop(len(records), f"{type(error).__name__}: {error}")
                self._flush()
                if stop:
                    return
        finally:
            self._close_file()

    def _take(self) -> tuple[list[list[T]], bool]:
        """The next batch and whatever else is queued (so one flush serves them all:
        cheap under load, and the file is current whenever the queue is empty)."""
        first = self._queue.get()
        if first is self._STOP:
            return [], True
        pending: list[list[T]] = [first]  # type: ignore[list-item]
        while True:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                return pending, False
            if more is self._STOP:
                return pending, True
            pending.append(more)  # type: ignore[arg-type]

    def _append(self, records: list[T]) -> None:
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
        if self.max_bytes is not None and self._size and self._size + encoded > self.max_bytes:
            self._close_file()
            self.rotate()
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
