"""A JSON-lines log whose home is an object store: the writer appends to a file in a
local spool folder, and :class:`LogShipper` copies that writer's files to the remote
folder every few seconds and once more at shutdown.

Object stores cannot append, so each shipped file is a whole object, put again when it
has grown: a reader (the drift check, a retraining's dataset, both through fsspec) sees
every file as it was at some ship, never a torn line, because only the bytes up to the
last newline are put. Files are matched to the writer by the log's own naming
(``owns``: ``<id>.jsonl`` and its segments ``<id>.<UTC time>.jsonl``: a shipped log
rotates into segments whose names never change, so each is put once), so writers sharing
a folder (replicas, pods) never touch each other's objects; a segment the writer's
rotation deleted is deleted remotely too. Each process start writes files of its own
(:func:`spool_location` adds the start time to the name), so a restarted writer never
overwrites what an earlier one shipped; what was written after the last ship is lost
with the process (at most ``interval`` seconds of records) unless it shuts down cleanly.

Used by :class:`bertops.server.app.ModelServer` (the prediction log) and
:class:`bertops.server.gateway.app.Gateway` (the feedback log) when their log location
is a URI such as ``s3://bucket/root/<ns>/deployments/<name>/predictions/<id>.jsonl``;
a local path is written in place as before (:func:`spool_location`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bertops.api.artifacts import local_path

log = logging.getLogger(__name__)

SHIP_INTERVAL_SECONDS = 10.0
"""How often a writer's changed files are put: the most a drift check lags behind
(``BERTOPS_LOG_SHIP_SECONDS`` in the server's environment overrides it)."""


ACTIVE_FILE_BYTES = 8 << 20
"""Largest active file of a shipped log: a grown file is put whole, so this bounds what
one ship uploads per writer (the rotation keeps the same total, in more files)."""


def shipped_rotation(max_bytes: int, backups: int) -> tuple[int, int]:
    """A log's rotation (file size, old files kept) for shipping: files of at most
    :data:`ACTIVE_FILE_BYTES`, as many as keep about the same ``(backups + 1) * max_bytes``."""
    if max_bytes <= ACTIVE_FILE_BYTES:
        return max_bytes, backups
    total = (backups + 1) * max_bytes
    return ACTIVE_FILE_BYTES, -(-total // ACTIVE_FILE_BYTES) - 1


def spool_location(location: str) -> tuple[Path, str | None]:
    """Where a log given as ``location`` is appended, and its remote folder: a local path
    (or ``file://`` URI) is its own file and has none; any other URI gets a file in a new
    private spool folder (mode 0700; ``TMPDIR`` decides where), named as the URI's with
    this start's UTC time and a random tag before the suffix (``<id>.jsonl`` becomes
    ``<id>.20261208T011502Z-3f9a.jsonl``): one writer per object, across restarts too."""
    path = local_path(location)
    if path is not None:
        return path, None
    folder, _, name = location.rstrip("/").rpartition("/")
    if not name or "://" not in folder:
        raise ValueError(f"{location} names no file in a folder")
    stem, dot, suffix = name.rpartition(".")
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"
    spool = Path(tempfile.mkdtemp(prefix="bertops-log-"))
    return spool / (f"{stem}.{stamp}.{suffix}" if dot else f"{name}.{stamp}"), folder


def _shippable(path: Path) -> bytes:
    """The file's bytes up to its last newline: the writer may be mid-line."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1]


def _modified(entry: dict[str, Any]) -> float | None:
    """A listing entry's modification time (s3fs: ``LastModified``; others: ``mtime``)."""
    stamp = entry.get("LastModified", entry.get("mtime"))
    if isinstance(stamp, datetime):
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
    return float(stamp) if isinstance(stamp, int | float) else None


class LogShipper:
    """Copies the files of one writer (those ``owns`` accepts by name) from ``spool`` to
    ``remote_folder``; see the module docstring. ``fs`` is the fsspec filesystem (by
    default the one the URI names, credentials from the environment)."""

    def __init__(
        self,
        remote_folder: str,
        spool: Path,
        owns: Callable[[str], bool],
        *,
        interval: float = SHIP_INTERVAL_SECONDS,
        what: str = "log",
        stale: tuple[Callable[[str], bool], float] | None = None,
        fs: Any = None,
    ) -> None:
        if fs is None:
            from fsspec.core import url_to_fs

            fs, root = url_to_fs(remote_folder)
        else:
            root = remote_folder.split("://", 1)[-1]
        self.fs, self.root, self.remote_folder = fs, root.rstrip("/"), remote_folder.rstrip("/")
        self.spool, self.owns, self.interval, self.what = spool, owns, interval, what
        self.stale = stale  # (which remote files, retention): swept once, at start
        self.shipped: dict[str, tuple[int, int, int]] = {}  # name -> (inode, size, mtime)
        self.failures = 0
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _listing(self) -> list[dict[str, Any]]:
        self.fs.invalidate_cache(self.root)  # s3fs caches listings per process
        try:
            return list(self.fs.ls(self.root, detail=True))
        except FileNotFoundError:
            return []

    def sweep(self, matches: Callable[[str], bool], retention_seconds: float) -> int:
        """Delete the remote files ``matches`` accepts that were last put before the
        retention (writers that are gone: replaced pods, retired model versions)."""
        horizon = datetime.now(UTC).timestamp() - retention_seconds
        removed = 0
        for entry in self._listing():
            name = entry["name"].rstrip("/").rpartition("/")[2]
            modified = _modified(entry)
            if matches(name) and not self.owns(name) and modified and modified < horizon:
                with contextlib.suppress(FileNotFoundError):  # another writer swept it
                    self.fs.rm_file(entry["name"])
                    removed += 1
        if removed:
            log.info("removed %d stale %s file(s) in %s", removed, self.what, self.remote_folder)
        return removed

    @staticmethod
    def _stat(path: Path) -> tuple[int, int, int]:
        found = path.stat()
        return found.st_ino, found.st_size, found.st_mtime_ns

    def ship(self) -> int:
        """Put the writer's files that changed since the last ship (the active file
        first: a rotation's old lines are then briefly missing, never counted twice),
        then delete the remote ones the rotation removed; the number of files put."""
        present: dict[str, tuple[int, int, int]] = {}
        for path in self.spool.iterdir() if self.spool.is_dir() else ():
            if self.owns(path.name):
                with contextlib.suppress(FileNotFoundError):  # rotated away meanwhile
                    present[path.name] = self._stat(path)
        changed = sorted(
            (name for name, stat in present.items() if self.shipped.get(name) != stat),
            key=lambda name: (name.count("."), name),  # the active file has fewest dots
        )
        for name in changed:
            data = _shippable(self.spool / name)
            self.fs.pipe_file(f"{self.root}/{name}", data)
            self.shipped[name] = present[name]
        for name in sorted(set(self.shipped) - set(present)):
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(f"{self.root}/{name}")
            del self.shipped[name]
        return len(changed)

    def ship_quietly(self) -> None:
        """:meth:`ship`, with a failure logged once per outage (the store may be down;
        the spool keeps everything for the next try) and counted in ``failures``."""
        try:
            self.ship()
        except Exception as error:  # any driver error: keep the writer's thread alive
            self.failures += 1
            if not self._failing:
                log.warning(
                    "cannot ship the %s to %s (%s: %s); retrying every %.0f s",
                    self.what,
                    self.remote_folder,
                    type(error).__name__,
                    error,
                    self.interval,
                )
            self._failing = True
            return
        if self._failing:
            log.info("the %s ships to %s again", self.what, self.remote_folder)
        self._failing = False

    def start(self) -> None:
        """Ship every ``interval`` seconds on a daemon thread until :meth:`close`."""
        self._thread = threading.Thread(
            target=self._run, name=f"{self.what}-shipper".replace(" ", "-"), daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        if self.stale is not None:
            try:
                self.sweep(*self.stale)
            except Exception as error:  # the store may be down now; the next start sweeps
                log.warning("cannot sweep stale %s files in %s: %s", self.what, self.root, error)
        while not self._stop.wait(self.interval):
            self.ship_quietly()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread, ship once more (call after the log's own close, so its last
        lines are in the file), and remove the spool folder when that ship worked."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.ship_quietly()
        if not self._failing:
            for path in self.spool.iterdir() if self.spool.is_dir() else ():
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                os.rmdir(self.spool)
        else:
            log.error(
                "the last lines of the %s stay in %s: %s is unreachable",
                self.what,
                self.spool,
                self.remote_folder,
            )


def shipped_log(
    location: str,
    owns: Callable[[str, str], bool],
    what: str,
    stale: tuple[Callable[[str], bool], float] | None = None,
) -> tuple[Path, LogShipper | None]:
    """The local file a log at ``location`` appends to and, for a remote location, the
    started :class:`LogShipper` of its spool (``owns(file name, name)`` tells the log's
    files by name: :meth:`bertops.server.jsonlog.JsonLinesLog.owns`; ``stale`` as for
    :class:`LogShipper`). The caller closes the shipper after the log."""
    path, remote = spool_location(location)
    if remote is None:
        return path, None
    owned = functools.partial(owns, path.name)
    interval = float(os.environ.get("BERTOPS_LOG_SHIP_SECONDS") or SHIP_INTERVAL_SECONDS)
    shipper = LogShipper(remote, path.parent, owned, interval=interval, what=what, stale=stale)
    shipper.start()
    log.info("the %s is kept in %s and shipped to %s", what, path, remote)
    return path, shipper
