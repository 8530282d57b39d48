"""Artifact storage through fsspec URIs: atomic folder writes, local copies for reading,
and small JSON documents.

Used by every step: prepare and train stage their artifact in a temporary folder and
:func:`staged_folder` moves it into place only when everything is written, so a failed
step never leaves a half artifact; evaluate and train read inputs via :func:`local_folder`.
Works for plain paths, ``file://`` and any fsspec protocol (``s3://`` needs its driver).
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
from typing import Any, TypeVar

import fsspec
from fsspec.core import url_to_fs
from pydantic import BaseModel

from bertops.trainer.errors import BadInputError


def _fs(uri: str) -> tuple[Any, str]:
    fs, path = url_to_fs(uri)
    return fs, path


def is_local(uri: str) -> bool:
    fs, _ = _fs(uri)
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return any(p in ("file", "local") for p in protocols)


def local_path(uri: str) -> Path:
    """The filesystem path of a local URI (plain path or file://)."""
    _, path = _fs(uri)
    return Path(path)


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
    return sorted(Path(entry).name for entry in fs.ls(path, detail=False))


@contextlib.contextmanager
def staged_folder(uri: str) -> Iterator[Path]:
    """Yield a local folder to fill; on success it replaces ``uri`` as a whole.

    Local targets: the staging folder sits beside the target (same filesystem), so the
    final step is one rename; an existing target is moved aside first and removed after.
    Remote targets: upload to a temporary sibling, then move it into place.
    On any exception the staging folder is removed and the target is left untouched.
    """
    if is_local(uri):
        target = local_path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            yield staging
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            if target.exists():
                target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return
    fs, path = _fs(uri)
    staging = Path(tempfile.mkdtemp(prefix="bertops-stage-"))
    remote_tmp = f"{path.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield staging
        fs.put(str(staging) + "/", remote_tmp, recursive=True)
        if fs.exists(path):
            fs.rm(path, recursive=True)
        fs.mv(remote_tmp, path, recursive=True)
    except BaseException:
        with contextlib.suppress(Exception):
            if fs.exists(remote_tmp):
                fs.rm(remote_tmp, recursive=True)
        raise
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
    """Write a small document; local writes are atomic (temp file, then replace)."""
    if is_local(uri):
        path = local_path(uri)
        if str(path).startswith("/dev/"):  # e.g. /dev/termination-log: write in place
            path.write_text(text)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.write_text(text)
        os.replace(tmp, path)
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


ManifestT = TypeVar("ManifestT", bound=BaseModel)


def read_verified_manifest(folder: Path, name: str, model: type[ManifestT], what: str
                           ) -> ManifestT:
    """The manifest ``name`` of an artifact folder, after checking every listed file's
    sha256 (what a consumer must do before loading anything from it)."""
    from bertops.api.artifacts import verify_folder

    data = read_json(folder / name, what)
    try:
        manifest = model.model_validate(data)
    except ValueError as error:
        raise BadInputError(f"{folder / name} is not a valid {what} manifest: {error}") from error
    problems = verify_folder(folder, manifest.files)  # type: ignore[attr-defined]
    if problems:
        raise BadInputError(f"{what} {folder} fails verification: {'; '.join(problems[:5])}")
    return manifest
