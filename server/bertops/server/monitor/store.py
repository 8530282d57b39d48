"""Where the monitor's inputs and outputs live: a local folder for an input URI (remote
ones fetched once through fsspec) and an output folder published atomically, so a reader
sees the previous reference or report, or the new one, never a half-written one.

Used by :mod:`bertops.server.monitor.reference` and :mod:`bertops.server.monitor.drift`.
The trainer has the same publication in ``bertops.trainer.artifacts_io``; the server may
not import the trainer, so this is the monitor's small local-first copy of it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from bertops.api.artifacts import local_path
from bertops.server.monitor import MonitorError, MonitorInputError, MonitorTransientError

# A write that fails with one of these fails the same way on a retry: the output location
# itself is wrong (a file where a folder belongs, read-only, not permitted).
PERMANENT_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
        errno.ENOTEMPTY,
        errno.ENAMETOOLONG,
        errno.EINVAL,
    }
)


def storage_error(error: OSError, what: str, reason: str) -> MonitorError:
    """A permanent (exit 2) or transient (exit 3) monitor error for a failed write."""
    where = f" ({error.filename})" if error.filename else ""
    message = f"cannot write {what}: {error.strerror or error}{where}"
    if error.errno in PERMANENT_ERRNOS:
        return MonitorInputError(message, reason)
    return MonitorTransientError(message, reason)


@contextlib.contextmanager
def local_input(uri: str, what: str, reason: str) -> Iterator[Path]:
    """A local folder holding the content of ``uri`` (the folder itself when local);
    :class:`MonitorInputError` with ``reason`` when there is no such folder."""
    path = local_path(uri)
    if path is not None:
        if not path.is_dir():
            raise MonitorInputError(f"{what} {uri} does not exist or is not a folder", reason)
        yield path
        return
    import fsspec

    fs, remote = fsspec.core.url_to_fs(uri)
    if not fs.isdir(remote):
        raise MonitorInputError(f"{what} {uri} does not exist or is not a folder", reason)
    scratch = Path(tempfile.mkdtemp(prefix="bertops-monitor-"))
    try:
        fs.get(remote.rstrip("/") + "/", str(scratch) + "/", recursive=True)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish_local(staging: Path, target: Path) -> None:
    """Flush the staging folder, then rename it into place (the old one moved aside first
    and removed after), so a crash never leaves a torn folder at ``target``."""
    for child in staging.iterdir():
        _fsync(child)
    _fsync(staging)
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    moved = target.is_dir() and not target.is_symlink()
    if moved:
        target.rename(old)
    try:
        staging.rename(target)  # fails on a file or a symlink at target: nothing replaced
    except OSError:
        if moved:
            old.rename(target)  # put the previous folder back
        raise
    _fsync(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _publish_remote(staging: Path, uri: str, last: str) -> None:
    """Object stores have no rename: upload every file, the one named ``last`` (the file
    a reader checks first) after all the others."""
    import fsspec

    fs, remote = fsspec.core.url_to_fs(uri)
    names = sorted(p.name for p in staging.iterdir() if p.name != last)
    for name in [*names, last]:
        fs.put_file(str(staging / name), f"{remote.rstrip('/')}/{name}")


def check_output(uri: str, what: str, reason: str) -> None:
    """Fail fast, before any expensive work, when a local output folder cannot be
    published: something that is not a folder in its place, or a parent that cannot be
    created. (Anything else still fails at publication, with the same error types.)"""
    target = local_path(uri)
    if target is None:
        return
    try:
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(target))
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise storage_error(error, what, reason) from error


@contextlib.contextmanager
def staged_output(uri: str, what: str, reason: str, last: str) -> Iterator[Path]:
    """Yield an empty local folder to fill; on success it becomes ``uri``. An OSError while
    creating, filling or publishing it becomes a :class:`MonitorError` with ``reason``
    (see :func:`storage_error`); on any failure the staging folder is removed and ``uri``
    is left as it was."""
    target = local_path(uri)
    try:
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
        else:
            staging = Path(tempfile.mkdtemp(prefix="bertops-monitor-out-"))
    except OSError as error:
        raise storage_error(error, what, reason) from error
    try:
        yield staging
        if target is not None:
            _publish_local(staging, target)
        else:
            _publish_remote(staging, uri, last)
    except OSError as error:
        raise storage_error(error, what, reason) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
