"""Atomic publication of an artifact folder, and local copies of input folders: the one
implementation shared by the trainer and the drift monitor.

A writer fills a staging folder from :func:`staged_folder`; only when the ``with`` body
ends without an exception does the folder replace the target URI as a whole, so a reader
sees the previous folder or the new one, never a half-written one, and a failed write
leaves the target untouched. Local targets (plain paths, ``file://``) are flushed to disk
and renamed into place (:func:`publish_local`); remote fsspec targets, which have no
atomic rename, are written through a temporary prefix with the caller's "last" files
(those a reader checks first: a manifest, a report) written after everything else
(:func:`publish_remote`). :func:`local_folder` gives a local folder for an input URI,
fetching a remote one once.

Called by ``bertops.trainer.artifacts_io`` (every trainer step's artifact, ``last`` being
the manifests of :data:`bertops.api.artifacts.MANIFEST_NAMES`) and
``bertops.server.monitor.store`` (the drift reference and report). Errors are plain:
``OSError`` (and whatever the fsspec driver raises) from writing, :class:`MissingInputError`
for an input that is not a folder; each caller maps them to its own error types. fsspec is
imported only for remote URIs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bertops.api.artifacts import local_path


class MissingInputError(Exception):
    """An input URI that does not exist or is not a folder (the message names it)."""


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entries to the disk (a rename is durable only once
    the folder holding it is flushed)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder below ``folder``, deepest first, then ``folder``."""
    for dirpath, _, filenames in os.walk(folder, topdown=False):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        fsync_path(Path(dirpath))


def publish_local(staging: Path, target: Path) -> None:
    """Rename a complete staging folder (beside ``target``, same filesystem) into place.

    The staging tree is flushed first and the parent folder after, so a crash never leaves
    a torn folder at ``target``. An existing folder is moved aside, put back when the
    rename fails, and removed after it succeeds; a file or a symlink at ``target`` is never
    replaced (the rename fails with ``NotADirectoryError``). Readers see the old folder,
    briefly none, or the new one; never a mix.
    """
    fsync_tree(staging)
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
    fsync_path(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _key(path: str) -> str:
    """A store path in one spelling (fsspec listings may add or drop the leading '/')."""
    return "/" + path.strip("/")


STALE_TEMP_SECONDS = 3600.0
"""A temporary prefix of a publication untouched this long is a killed publisher's (a live
one writes a file at least every few minutes): the next publication of its target
deletes it (:func:`sweep_stale_temps`)."""


def _modified(info: dict[str, Any]) -> float | None:
    stamp = info.get("LastModified", info.get("mtime"))
    if isinstance(stamp, datetime):
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
    return float(stamp) if isinstance(stamp, int | float) else None


def sweep_stale_temps(fs: Any, path: str, stale_seconds: float = STALE_TEMP_SECONDS) -> int:
    """Delete the temporary prefixes that publications of ``path`` left (a SIGKILL runs no
    clean-up) whose newest file is older than ``stale_seconds``; how many. Readers never
    look at them (they are dot-prefixed siblings, not the target)."""
    parent, _, name = path.rstrip("/").rpartition("/")
    horizon = time.time() - stale_seconds
    try:
        siblings = fs.ls(parent, detail=True, refresh=True) if parent else []
    except FileNotFoundError:
        return 0
    removed = 0
    for entry in siblings:
        if not entry["name"].rstrip("/").rpartition("/")[2].startswith(f".{name}.tmp-"):
            continue
        stamps = [_modified(info) for info in fs.find(entry["name"], detail=True).values()]
        if all(stamp is not None and stamp < horizon for stamp in stamps):
            with contextlib.suppress(FileNotFoundError):
                fs.rm(entry["name"], recursive=True)
                removed += 1
    return removed


def publish_remote(fs: Any, staging: Path, path: str, last: str | Iterable[str]) -> None:
    """Publish ``staging`` at ``path`` on an fsspec filesystem, the files named in ``last``
    (relative paths, in that order) after all the others.

    Object stores have no atomic rename, and readers trust a folder only once its ``last``
    file is there. So: upload everything to a unique temporary prefix (a failed upload
    leaves the target untouched), take the old ``last`` files down, copy the other files
    over, delete files the new folder does not have, and write the ``last`` files. The
    target is never removed wholesale and never carries a ``last`` file that the other
    files do not match. The temporary prefix is removed in every case (a killed
    publisher's is removed by a later publication of the target: :func:`sweep_stale_temps`).
    """
    ordered = list(dict.fromkeys((last,) if isinstance(last, str) else last))
    path = path.rstrip("/")
    parent, _, name = path.rpartition("/")
    stem = f".{name}.tmp-{uuid.uuid4().hex}"
    temp = f"{parent}/{stem}" if parent else stem
    names = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    finals = [n for n in ordered if n in names]
    sweep_stale_temps(fs, path)
    try:
        for name in names:
            fs.put_file(str(staging / name), f"{temp}/{name}")
        for name in ordered:
            if fs.exists(f"{path}/{name}"):
                fs.rm_file(f"{path}/{name}")
        for name in names:
            if name not in finals:
                fs.copy(f"{temp}/{name}", f"{path}/{name}")
        keep = {_key(f"{path}/{n}") for n in names}
        for entry in fs.find(path) if fs.exists(path) else []:
            if _key(entry) not in keep:
                fs.rm_file(entry)
        for name in finals:
            fs.copy(f"{temp}/{name}", f"{path}/{name}")
    finally:
        with contextlib.suppress(Exception):
            if fs.exists(temp):
                fs.rm(temp, recursive=True)


def _url_to_fs(uri: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(uri)
    return fs, path


def _naming(error: OSError, uri: str) -> OSError:
    message = f"cannot publish to {uri}: {error}"
    try:
        return type(error)(message)
    except TypeError:  # a subclass with its own constructor (fsspec's FileExpired)
        return OSError(error.errno, message)


@contextlib.contextmanager
def staged_folder(uri: str, *, last: str | Iterable[str]) -> Iterator[Path]:
    """Yield an empty local folder to fill; when the body succeeds it replaces ``uri``.

    Local targets: the staging folder sits beside the target and is renamed into place
    (:func:`publish_local`). Remote targets: it is a temporary folder, uploaded with the
    file(s) named by ``last`` written after all others (:func:`publish_remote`; ``last``
    does not matter locally, where the rename publishes everything at once). On any
    exception, in the body or while publishing, the staging folder is removed, ``uri`` is
    left as it was and the exception propagates unchanged.
    """
    finals = (last,) if isinstance(last, str) else tuple(last)  # a one-shot iterable too
    target = local_path(uri)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
    else:
        fs, remote = _url_to_fs(uri)
        staging = Path(tempfile.mkdtemp(prefix="bertops-stage-"))
    try:
        yield staging
        if target is not None:
            publish_local(staging, target)
        else:
            try:
                publish_remote(fs, staging, remote, finals)
            except OSError as error:
                # A store's message ("The specified bucket does not exist.") names neither
                # bucket nor prefix: the condition a person reads must. Same type, so the
                # step's exit code (bad input or retry) does not change.
                raise _naming(error, uri) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a local publish


@contextlib.contextmanager
def local_folder(uri: str, what: str) -> Iterator[Path]:
    """A local folder with the content of ``uri``: the folder itself when local, else a
    temporary copy fetched once and removed afterwards.

    Raises :class:`MissingInputError` (naming ``what`` and ``uri``) before yielding when
    there is no folder at ``uri``.
    """
    path = local_path(uri)
    if path is not None:
        if not path.is_dir():
            raise MissingInputError(f"{what} {uri} does not exist or is not a folder")
        yield path
        return
    fs, remote = _url_to_fs(uri)
    if not fs.isdir(remote):
        raise MissingInputError(f"{what} {uri} does not exist or is not a folder")
    scratch = Path(tempfile.mkdtemp(prefix="bertops-fetch-"))
    try:
        fs.get(remote.rstrip("/") + "/", str(scratch) + "/", recursive=True)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
