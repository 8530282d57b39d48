"""Artifact manifests and their verification: what a prepared dataset or a model folder
contains (the sha256 of every file), and the one set of checks every consumer runs before
it trusts a folder: manifest paths stay inside the folder (symlinks included), no
pickle-based file, a cap on how much is walked and hashed, and every file's sha256.

Written by the trainer's steps (:func:`digest_folder`); verified by the trainer
(``bertops.trainer.artifacts_io``), the model server (``bertops.server.artifact``) and the
operator (``bertops.operator.artifacts``), which all call :func:`verify_folder`,
:func:`read_manifest` and :func:`check_model` here. Standard library + pydantic only, so
the operator verifies without torch or fsspec; remote stores are fetched by the callers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal, TypeVar

from pydantic import Field, ValidationError

from bertops.api.meta import ApiModel
from bertops.api.model import Lineage
from bertops.api.training import Task

MODEL_MANIFEST = "bertops-model.json"
DATASET_MANIFEST = "bertops-dataset.json"


class FileDigest(ApiModel):
    path: str = Field(description="Relative to the artifact folder, '/'-separated.")
    sha256: str
    bytes: int


class LoadStep(ApiModel):
    """A transform the loader applies after reading the weights (e.g. quantization),
    recorded instead of pickling a transformed module."""

    model_config = {"extra": "allow"}

    op: str
    params: dict[str, Any] = Field(default_factory=dict)


class ModelManifest(ApiModel):
    model_config = {"extra": "ignore"}

    format_version: Literal[1] = 1
    name: str
    task: Task = "sequenceClassification"
    format: Literal["safetensors", "onnx"] = "safetensors"
    labels: list[str]
    max_length: int = 128
    files: list[FileDigest]
    load_recipe: list[LoadStep] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)
    measurements: dict[str, Any] = Field(default_factory=dict)
    lineage: Lineage = Field(default_factory=Lineage)
    created_at: datetime | None = None


class DatasetManifest(ApiModel):
    model_config = {"extra": "ignore"}

    format_version: Literal[1] = 1
    checksum: str = Field(description="sha256 over the prepared content (not timestamps).")
    labels: list[str]
    rows: dict[str, int]
    files: list[FileDigest]
    stats: dict[str, Any] = Field(default_factory=dict)
    tokenizer: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class CheckpointManifest(ApiModel):
    """The completeness marker of one training checkpoint, written last: the sha256 of
    every file, so a resume can tell a good checkpoint from a torn or corrupted one."""

    model_config = {"extra": "ignore"}

    format_version: Literal[1] = 1
    epoch: int
    files: list[FileDigest]


CHECKPOINT_MANIFEST = "bertops-checkpoint.json"
MANIFEST_NAMES = (MODEL_MANIFEST, DATASET_MANIFEST, CHECKPOINT_MANIFEST)
# Formats whose loaders run code (pickle and its wrappers). An artifact never carries them,
# even listed in its manifest: nothing here reads them, and their presence means the
# producer did something bertops does not support.
PICKLE_SUFFIXES = (
    ".bin",
    ".pt",
    ".pth",
    ".pkl",
    ".pickle",
    ".ckpt",
    ".joblib",
    ".dill",
    ".npy",
    ".npz",
)
_CHUNK = 1 << 20

ManifestT = TypeVar("ManifestT", ModelManifest, DatasetManifest, CheckpointManifest)


class ArtifactError(Exception):
    """The artifact is missing, incomplete, tampered with, too large or of a refused kind."""


@dataclass(frozen=True)
class Limits:
    """How much one verification may walk and hash: a URI such as ``/`` must fail fast
    instead of making the operator or a server hash the whole filesystem."""

    max_files: int = 10_000  # directory entries walked (files and folders)
    max_bytes: int = 32 << 30  # bytes the manifest may list (BERT-large is ~1.3 GB)
    max_manifest_bytes: int = 16 << 20


DEFAULT_LIMITS = Limits()


def local_path(uri: str) -> Path | None:
    """The filesystem path of a plain path or ``file://`` URI; None for any other scheme
    (``s3://``, ``memory://``, chained fsspec URLs), which the caller fetches first."""
    if uri.startswith("file://"):
        rest = uri.removeprefix("file://")
        return Path(rest.removeprefix("localhost") if rest.startswith("localhost/") else rest)
    if "://" in uri:
        return None
    return Path(uri).expanduser()


def sha256_file(path: Path, chunk: int = _CHUNK) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _escapes(relative: str) -> bool:
    """A manifest path that names something outside its folder on its face."""
    pure = PurePosixPath(relative)
    return not relative or pure.is_absolute() or ".." in pure.parts or "\\" in relative


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path`` with every symlink resolved stays below ``root`` (resolved)."""
    return path.resolve().is_relative_to(root)


def _walk(folder: Path, limits: Limits) -> Iterator[tuple[str, Path]]:
    """(relative '/'-path, path) of every non-folder entry below ``folder`` and of every
    symlinked folder (not followed), in a stable order. Raises :class:`ArtifactError`
    past ``limits.max_files`` entries, before reading any file."""
    seen = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        seen += len(dirnames) + len(filenames)
        if seen > limits.max_files:
            raise ArtifactError(
                f"{folder}: more than {limits.max_files} entries; not an "
                "artifact folder (stopped walking it)"
            )
        base = Path(dirpath)
        links = [name for name in dirnames if (base / name).is_symlink()]
        for name in sorted(filenames) + links:
            path = base / name
            yield path.relative_to(folder).as_posix(), path


def digest_folder(
    folder: Path, exclude: tuple[str, ...] = MANIFEST_NAMES, limits: Limits = DEFAULT_LIMITS
) -> list[FileDigest]:
    """FileDigest of every file below a folder the caller wrote (e.g. a staging folder),
    sorted by path; top-level manifests are left out."""
    return [
        FileDigest(path=relative, sha256=sha256_file(path), bytes=path.stat().st_size)
        for relative, path in sorted(_walk(folder, limits))
        if path.is_file() and relative not in exclude
    ]


def _open_copy(target: Path) -> IO[bytes]:
    """A new private file (never an existing one, never through a symlink)."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(target, flags, 0o600), "wb")


def _matches(path: Path, expected: FileDigest, copy_to: Path | None) -> bool:
    """Hash ``path`` in one read, stopping as soon as it is longer than expected; with
    ``copy_to`` the same bytes are written there, so they are the bytes that matched."""
    if path.stat().st_size != expected.bytes:
        return False
    digest, size = hashlib.sha256(), 0
    sink = _open_copy(copy_to) if copy_to is not None else None
    try:
        with path.open("rb") as source:
            while block := source.read(_CHUNK):
                size += len(block)
                if size > expected.bytes:
                    return False
                digest.update(block)
                if sink is not None:
                    sink.write(block)
    finally:
        if sink is not None:
            sink.close()
    return size == expected.bytes and digest.hexdigest() == expected.sha256


def verify_folder(
    folder: Path,
    files: list[FileDigest],
    limits: Limits = DEFAULT_LIMITS,
    *,
    copy_to: Path | None = None,
) -> list[str]:
    """Problems found; empty when the folder holds exactly the listed files, unchanged.

    Refused before anything is hashed: paths that escape the folder, pickle-based files,
    and listings over ``limits``. Then the folder is walked (capped) for unexpected files
    and symlinks that lead outside it, and every listed file is hashed. With ``copy_to``
    each file is copied there by the read that hashes it: a caller that loads from
    ``copy_to`` loads exactly the bytes that matched (no check-then-use gap).
    """
    problems = [f"manifest path escapes the artifact: {f.path}" for f in files if _escapes(f.path)]
    problems += [
        f"pickle-based file not allowed: {f.path}"
        for f in files
        if f.path.lower().endswith(PICKLE_SUFFIXES)
    ]
    listed_bytes = sum(f.bytes for f in files)
    if len(files) > limits.max_files or listed_bytes > limits.max_bytes:
        problems.append(
            f"the manifest lists {len(files)} files of {listed_bytes} bytes, over "
            f"the limit of {limits.max_files} files or {limits.max_bytes} bytes"
        )
    if problems:  # never hash outside the folder, nor without bound
        return problems
    root = folder.resolve()
    expected = {f.path for f in files}
    try:
        for relative, path in _walk(folder, limits):
            if not _inside(root, path):
                problems.append(f"symlink points outside the artifact: {relative}")
            elif relative not in expected and relative not in MANIFEST_NAMES:
                problems.append(f"unexpected file {relative}")
    except ArtifactError as error:
        return [str(error)]
    for digest in files:
        path = folder / digest.path
        if not _inside(root, path):
            problems.append(f"manifest path escapes the artifact: {digest.path}")
        elif not path.is_file():
            problems.append(f"missing file {digest.path}")
        elif not _matches(path, digest, copy_to / digest.path if copy_to else None):
            problems.append(f"sha256 mismatch for {digest.path}")
    return problems


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def read_manifest(
    folder: Path,
    model: type[ManifestT],
    name: str = MODEL_MANIFEST,
    *,
    what: str = "model artifact",
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[ManifestT, bytes]:
    """The parsed manifest ``name`` of a folder and its exact bytes (size-capped)."""
    path = folder / name
    if not path.is_file():
        raise ArtifactError(f"{folder}: no {name}; not a bertops {what}")
    if not _inside(folder.resolve(), path):
        raise ArtifactError(f"{folder}: {name} points outside the artifact")
    with path.open("rb") as handle:
        raw = handle.read(limits.max_manifest_bytes + 1)
    if len(raw) > limits.max_manifest_bytes:
        raise ArtifactError(f"{path}: over {limits.max_manifest_bytes} bytes; not a manifest")
    try:
        return model.model_validate_json(raw), raw
    except ValidationError as error:
        raise ArtifactError(f"{path}: invalid manifest: {_first_error(error)}") from error


def verify_manifest(
    folder: Path,
    model: type[ManifestT],
    name: str,
    *,
    what: str,
    limits: Limits = DEFAULT_LIMITS,
    copy_to: Path | None = None,
) -> tuple[ManifestT, str]:
    """The manifest and the sha256 of its bytes once every listed file verified; else
    :class:`ArtifactError` naming the problems."""
    manifest, raw = read_manifest(folder, model, name, what=what, limits=limits)
    problems = verify_folder(folder, manifest.files, limits, copy_to=copy_to)
    if problems:
        raise ArtifactError(f"{what} {folder} fails verification: {'; '.join(problems[:10])}")
    return manifest, hashlib.sha256(raw).hexdigest()


def listing_digest(files: list[FileDigest]) -> str:
    """sha256 over the file list: changes whenever any weight or file changes."""
    lines = "\n".join(f"{f.path} {f.sha256}" for f in sorted(files, key=lambda f: f.path))
    return hashlib.sha256(lines.encode()).hexdigest()


def model_problems(manifest: ModelManifest) -> list[str]:
    """What a servable model artifact must list besides matching files."""
    listed = {entry.path for entry in manifest.files}
    required = ["model.onnx"] if manifest.format == "onnx" else ["config.json"]
    problems = [f"missing required file {name}" for name in required if name not in listed]
    if manifest.format == "safetensors" and not any(n.endswith(".safetensors") for n in listed):
        problems.append("no .safetensors weights listed")
    if not listed & {"tokenizer.json", "vocab.txt"}:
        problems.append("no tokenizer (tokenizer.json or vocab.txt)")
    return problems


@dataclass(frozen=True)
class ModelCheck:
    """What :func:`check_model` found: the manifest (when readable) and every problem."""

    manifest: ModelManifest | None
    manifest_sha256: str | None
    problems: list[str]


def check_model(
    folder: Path, limits: Limits = DEFAULT_LIMITS, *, copy_to: Path | None = None
) -> ModelCheck:
    """Read and verify a model artifact folder without raising (the operator reports the
    problems as status); see :func:`verify_folder` for ``copy_to``."""
    try:
        manifest, raw = read_manifest(folder, ModelManifest, limits=limits)
    except ArtifactError as error:
        return ModelCheck(None, None, [str(error)])
    problems = verify_folder(folder, manifest.files, limits, copy_to=copy_to)
    problems += model_problems(manifest)
    return ModelCheck(manifest, hashlib.sha256(raw).hexdigest(), problems)
