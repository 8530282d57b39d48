"""Artifact storage through fsspec URIs for the trainer's steps: atomic publication of a
folder, local copies for reading, small JSON documents, and verified manifests.

Used by every step: prepare, train and compress stage their artifact in a temporary
folder and :func:`staged_folder` publishes it only when everything is written, so a failed
step never leaves a half artifact; evaluate, train and compress read inputs via
:func:`local_folder` and :func:`read_verified_manifest`. The checks (escaping paths,
pickles, size caps, sha256) are the shared ones of :mod:`bertops.api.artifacts`; this
module adds only the fsspec transport. Works for plain paths, ``file://`` and any fsspec
protocol (``s3://`` needs its driver).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from bertops.api import artifacts as shared
from bertops.api.artifacts import MANIFEST_NAMES, ArtifactError, ManifestT
from bertops.trainer.errors import BadInputError


def _fs(uri: str) -> tuple[Any, str]:
    fs, path = url_to_fs(uri)
    return fs, path


def is_local(uri: str) -> bool:
    return shared.local_path(uri) is not None


def local_path(uri: str) -> Path:
    """The filesystem path of a local URI (plain path or file://)."""
    path = shared.local_path(uri)
    if path is None:
        raise BadInputError(f"{uri} is not a local path")
    return path


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def exists(uri: str) -> bool:
    fs, path = _fs(uri)
    return bool(fs.exists(path))


def remove(uri: str) -> None:
    fs, path = _fs(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def list_names(uri: str) -> list[str]:
    """Names directly below a folder URI (empty when it does not exist)."""
    fs, path = _fs(uri)
    if not fs.exists(path):
        return []
    return sorted(Path(entry.rstrip("/")).name for entry in fs.ls(path, detail=False))


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entries to the disk (a rename is durable only once
    the folder holding it is flushed)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for dirpath, _, filenames in os.walk(folder, topdown=False):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        fsync_path(Path(dirpath))


def _publish_local(staging: Path, target: Path) -> None:
    """Rename a complete, flushed staging folder into place. Readers see the old
    artifact, briefly none, or the new one; never a mix, and never one that a crash
    could leave half-written on disk."""
    _fsync_tree(staging)
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    if target.exists():
        target.rename(old)
    staging.rename(target)
    fsync_path(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _key(path: str) -> str:
    """A store path in one spelling (fsspec listings may add or drop the leading '/')."""
    return "/" + path.strip("/")


def _publish_remote(fs: Any, staging: Path, path: str) -> None:
    """Object stores have no atomic rename, and readers trust only a folder whose manifest
    verifies. So: upload everything to a unique temporary prefix (a failed upload leaves
    the target untouched), take the old manifest down, copy the data files over, delete
    files the new artifact does not have, and write the manifest last. The target is
    never removed wholesale and never carries a manifest that its files do not match."""
    path = path.rstrip("/")
    parent, _, name = path.rpartition("/")
    temp = (
        f"{parent}/.{name}.tmp-{uuid.uuid4().hex}" if parent else f".{name}.tmp-{uuid.uuid4().hex}"
    )
    names = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    manifests = [n for n in names if n in MANIFEST_NAMES]
    try:
        for name in names:
            fs.put_file(str(staging / name), f"{temp}/{name}")
        for name in MANIFEST_NAMES:
            if fs.exists(f"{path}/{name}"):
                fs.rm_file(f"{path}/{name}")
        for name in names:
            if name not in manifests:
                fs.copy(f"{temp}/{name}", f"{path}/{name}")
        keep = {_key(f"{path}/{n}") for n in names}
        for entry in fs.find(path) if fs.exists(path) else []:
            if _key(entry) not in keep:
                fs.rm_file(entry)
        for name in manifests:
            fs.copy(f"{temp}/{name}", f"{path}/{name}")
    finally:
        with contextlib.suppress(Exception):
            if fs.exists(temp):
                fs.rm(temp, recursive=True)


@contextlib.contextmanager
def staged_folder(uri: str) -> Iterator[Path]:
    """Yield a local folder to fill; on success it replaces ``uri`` as a whole.

    Local targets: the staging folder sits beside the target (same filesystem), is
    flushed to disk, then renamed into place (see :func:`_publish_local`). Remote targets:
    see :func:`_publish_remote`. On any exception the staging folder is removed and the
    target is left untouched.
    """
    if is_local(uri):
        target = local_path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            yield staging
            _publish_local(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return
    fs, path = _fs(uri)
    staging = Path(tempfile.mkdtemp(prefix="bertops-stage-"))
    try:
        yield staging
        _publish_remote(fs, staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def local_folder(uri: str, what: str) -> Iterator[Path]:
    """A local folder with the content of ``uri`` (the folder itself when local).

    ``what`` names the input in the error a person sees when it does not exist.
    """
    if is_local(uri):
        path = local_path(uri)
        if not path.is_dir():
            raise BadInputError(f"{what} {uri} does not exist or is not a folder")
        yield path
        return
    fs, path_s = _fs(uri)
    if not fs.isdir(path_s):
        raise BadInputError(f"{what} {uri} does not exist or is not a folder")
    scratch = Path(tempfile.mkdtemp(prefix="bertops-fetch-"))
    try:
        fs.get(path_s.rstrip("/") + "/", str(scratch) + "/", recursive=True)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def read_bytes(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as handle:
        data: bytes = handle.read()
        return data


def write_text(uri: str, text: str) -> None:
    """Write a small document; local writes are atomic and durable (temp file, fsync,
    replace, fsync the folder)."""
    if is_local(uri):
        path = local_path(uri)
        if str(path).startswith("/dev/"):  # e.g. /dev/termination-log: write in place
            path.write_text(text)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        with tmp.open("w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
        return
    fs, path_s = _fs(uri)
    fs.pipe(path_s, text.encode())


def dump_json(data: Any) -> str:
    """Stable JSON (sorted keys) so equal content gives equal bytes."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json(path: Path, data: Any) -> None:
    path.write_text(dump_json(data), encoding="utf-8")


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise BadInputError(f"{what}: {path.name} is missing in {path.parent}") from error
    except json.JSONDecodeError as error:
        raise BadInputError(f"{what}: {path} is not valid JSON ({error})") from error


def read_verified_manifest(folder: Path, name: str, model: type[ManifestT], what: str) -> ManifestT:
    """The manifest ``name`` of an artifact folder, after the shared checks (every listed
    file's sha256, no escaping paths, no pickles): what a consumer must do before loading
    anything from it. A refusal is bad input (exit code 2)."""
    try:
        manifest, _ = shared.verify_manifest(folder, model, name, what=what)
    except ArtifactError as error:
        raise BadInputError(str(error)) from error
    return manifest
