"""Artifact storage through fsspec URIs for the trainer's steps: atomic publication of a
folder, local copies for reading, small JSON documents, and verified manifests.

Used by every step: prepare, train and compress stage their artifact in a temporary
folder and :func:`staged_folder` publishes it only when everything is written, so a failed
step never leaves a half artifact; evaluate, train and compress read inputs via
:func:`local_folder` and :func:`read_verified_manifest`. Publication and fetching are the
shared ones of :mod:`bertops.modelio.publish` (also used by the drift monitor), with the
manifests written last and a missing input reported as :class:`BadInputError`; the checks
(escaping paths, pickles, size caps, sha256) are the shared ones of
:mod:`bertops.api.artifacts`. Works for plain paths, ``file://`` and any fsspec protocol
(``s3://`` needs its driver).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from bertops.api import artifacts as shared
from bertops.api.artifacts import MANIFEST_NAMES, ArtifactError, ManifestT
from bertops.modelio import publish
from bertops.modelio.publish import fsync_path
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


def staged_folder(uri: str) -> contextlib.AbstractContextManager[Path]:
    """A local folder to fill; on success it replaces ``uri`` as a whole, the manifest
    (:data:`~bertops.api.artifacts.MANIFEST_NAMES`) written last on a remote store. On any
    exception the target is left untouched. See :func:`bertops.modelio.publish.staged_folder`.
    """
    return publish.staged_folder(uri, last=MANIFEST_NAMES)


@contextlib.contextmanager
def local_folder(uri: str, what: str) -> Iterator[Path]:
    """A local folder with the content of ``uri`` (the folder itself when local).

    ``what`` names the input in the :class:`BadInputError` a person sees when it does not
    exist (see :func:`bertops.modelio.publish.local_folder`).
    """
    with contextlib.ExitStack() as stack:
        try:
            folder = stack.enter_context(publish.local_folder(uri, what))
        except publish.MissingInputError as error:
            raise BadInputError(str(error)) from error
        yield folder


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
