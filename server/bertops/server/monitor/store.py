"""Where the monitor's inputs and outputs live: a local folder for an input URI (remote
ones fetched once through fsspec) and an output folder published atomically, so a reader
sees the previous reference or report, or the new one, never a half-written one.

Used by :mod:`bertops.server.monitor.reference` and :mod:`bertops.server.monitor.drift`.
Fetching and publication are :mod:`bertops.modelio.publish`, the one implementation the
trainer's ``bertops.trainer.artifacts_io`` uses too (the server may not import the
trainer); this module adds the monitor's error semantics: a missing input is a
:class:`MonitorInputError`, and a failed write is permanent (exit 2) or transient (exit 3)
by its errno (:func:`storage_error`), checked early by :func:`check_output`.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path

from bertops.api.artifacts import local_path
from bertops.modelio import publish
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
    with contextlib.ExitStack() as stack:
        try:
            folder = stack.enter_context(publish.local_folder(uri, what))
        except publish.MissingInputError as error:
            raise MonitorInputError(str(error), reason) from error
        yield folder


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
    """Yield an empty local folder to fill; on success it becomes ``uri``, the file ``last``
    written after the others on a remote store (:func:`bertops.modelio.publish.staged_folder`).
    An OSError while creating, filling or publishing it becomes a :class:`MonitorError` with
    ``reason`` (see :func:`storage_error`); on any failure the staging folder is removed and
    ``uri`` is left as it was."""
    try:
        with publish.staged_folder(uri, last=last) as staging:
            yield staging
    except OSError as error:
        raise storage_error(error, what, reason) from error
