"""Model artifacts as the management service reads them: the training curves and the
confusion matrix a model's ``metrics.json`` holds, and verified downloads.

Everything that decides whether bytes can be trusted is the shared verification of
:mod:`bertops.api.artifacts` (manifest reading, every file's sha256, no escaping paths, no
pickles); this module only chooses what to read and where the verified copy goes. A
download copies each file by the same read that hashes it (``verify_folder(copy_to=)``),
so what lands on disk is exactly what matched the manifest. Used by the CLI
(``models show|download``) and the JSON API. A local store (a path, ``file://``) is read in
place; from an object store (``s3://``, through fsspec) the files needed are fetched into a
private temporary folder first and verified there the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertops.api.artifacts import (
    MODEL_MANIFEST,
    ArtifactError,
    ModelManifest,
    local_path,
    read_manifest,
    sha256_file,
    verify_folder,
)

METRICS_FILE = "metrics.json"  # written by bertops.trainer.model_artifact
MAX_METRICS_BYTES = 16 << 20


@dataclass(frozen=True)
class Download:
    """A verified copy: its folder, the manifest and the sha256 of the manifest's bytes."""

    folder: Path
    manifest: ModelManifest
    manifest_sha256: str
    total_bytes: int


@contextlib.contextmanager
def artifact_source(model: dict[str, Any], only: tuple[str, ...] = ()) -> Iterator[Path]:
    """A local folder holding a model's artifact (status.artifactUri): the folder itself on
    a local store; from an object store a temporary copy (of the files named in ``only``,
    else of all), removed afterwards. Nothing is trusted yet: callers verify it."""
    uri = (model.get("status") or {}).get("artifactUri")
    if not uri:
        raise ArtifactError("the model has no artifact yet (status.artifactUri is empty)")
    folder = local_path(str(uri))
    if folder is not None:
        if not folder.is_dir():
            raise ArtifactError(f"{uri}: no such artifact folder")
        yield folder
        return
    scratch = Path(tempfile.mkdtemp(prefix="bertops-artifact-"))
    try:
        _fetch(str(uri), scratch, only)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fetch(uri: str, scratch: Path, only: tuple[str, ...]) -> None:
    from fsspec.core import url_to_fs

    try:
        fs, path = url_to_fs(uri)
        path = path.rstrip("/")
        if not fs.exists(f"{path}/{MODEL_MANIFEST}"):
            raise ArtifactError(f"{uri}: no such artifact (no {MODEL_MANIFEST})")
        if only:
            for name in only:
                if fs.exists(f"{path}/{name}"):
                    fs.get_file(f"{path}/{name}", str(scratch / name))
        else:
            fs.get(f"{path}/", f"{scratch}/", recursive=True)
    except ArtifactError:
        raise
    except Exception as error:  # the store's driver has its own errors; never the key
        raise ArtifactError(
            f"{uri}: cannot read the store: {type(error).__name__}: {error}"
        ) from error


def read_metrics(folder: Path) -> dict[str, Any]:
    """``metrics.json`` of an artifact, trusted only when its sha256 matches the manifest
    (the manifest lists it like every other file); {} when the artifact has none."""
    manifest, _ = read_manifest(folder, ModelManifest)
    entry = next((f for f in manifest.files if f.path == METRICS_FILE), None)
    if entry is None or entry.bytes > MAX_METRICS_BYTES:
        return {}
    path = folder / METRICS_FILE
    if not path.is_file() or sha256_file(path) != entry.sha256:
        raise ArtifactError(f"{path}: does not match the manifest's sha256")
    document = json.loads(path.read_bytes())
    return document if isinstance(document, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def curves(metrics: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
    """Per-epoch series from the training history: train loss, validation loss,
    accuracy and macro-F1, each as (epoch, value) points."""
    series: dict[str, list[tuple[float, float]]] = {}
    wanted = {
        "train loss": ("trainLoss",),
        "validation loss": ("validation", "loss"),
        "validation accuracy": ("validation", "accuracy"),
        "validation macro F1": ("validation", "macroF1"),
    }
    for record in metrics.get("history") or []:
        if not isinstance(record, dict) or _number(record.get("epoch")) is None:
            continue
        for name, path in wanted.items():
            node: Any = record
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            if (value := _number(node)) is not None:
                series.setdefault(name, []).append((float(record["epoch"]), value))
    return series


def confusion(metrics: dict[str, Any], labels: list[str]) -> dict[str, Any] | None:
    """The test split's confusion matrix (rows: true label, columns: predicted)."""
    for split in ("test", "validation"):
        matrix = (metrics.get(split) or {}).get("confusionMatrix")
        if isinstance(matrix, list) and matrix and all(isinstance(r, list) for r in matrix):
            names = labels if len(labels) == len(matrix) else [str(i) for i in range(len(matrix))]
            return {"split": split, "labels": names, "matrix": matrix}
    return None


def plots_data(model: dict[str, Any]) -> dict[str, Any]:
    """Curves and confusion matrix of a model, or the reason there are none."""
    try:
        with artifact_source(model, only=(MODEL_MANIFEST, METRICS_FILE)) as folder:
            metrics = read_metrics(folder)
    except (ArtifactError, ValueError, OSError) as error:
        return {"curves": {}, "confusion": None, "unavailable": str(error)}
    labels = (model.get("status") or {}).get("labels") or []
    return {"curves": curves(metrics), "confusion": confusion(metrics, labels), "unavailable": None}


def download(model: dict[str, Any], target: Path) -> Download:
    """Copy a model's artifact to ``target`` (which must not exist), verifying every
    file's sha256 while it writes; the manifest must also match status.manifestSha256.
    Nothing is left at ``target`` when anything fails."""
    with artifact_source(model) as folder:
        return _verified_copy(model, folder, target)


def _verified_copy(model: dict[str, Any], folder: Path, target: Path) -> Download:
    manifest, raw = read_manifest(folder, ModelManifest)
    digest = hashlib.sha256(raw).hexdigest()
    expected = (model.get("status") or {}).get("manifestSha256")
    if expected and expected != digest:
        raise ArtifactError(
            f"the manifest's sha256 {digest[:12]} is not the registered {expected[:12]}: "
            "the artifact changed after the model was registered"
        )
    if target.exists():
        raise ArtifactError(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        problems = verify_folder(folder, manifest.files, copy_to=staging / "copy")
        if problems:
            raise ArtifactError(f"artifact {folder} fails verification: {'; '.join(problems[:5])}")
        copy = staging / "copy"
        copy.mkdir(exist_ok=True, mode=0o700)
        (copy / MODEL_MANIFEST).write_bytes(raw)  # the bytes whose sha256 was checked
        os.replace(copy, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Download(target, manifest, digest, sum(f.bytes for f in manifest.files))


def tar_folder(folder: Path, archive: Path, arcname: str) -> str:
    """A plain tar of a verified copy (sorted, fixed owner, no timestamps); its sha256."""
    with tarfile.open(archive, "w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                info = tar.gettarinfo(str(path), f"{arcname}/{path.relative_to(folder).as_posix()}")
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                info.mode = 0o644
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
    return sha256_file(archive)


def staged_bytes(parent: Path, name: str) -> int:
    """Bytes copied so far by a :func:`download` into ``parent`` for ``name`` (the CLI's
    progress bar polls this while the copy runs in a worker thread)."""
    total = 0
    for staging in parent.glob(f".{name}.*"):
        for path in staging.rglob("*"):
            try:
                total += path.stat().st_size if path.is_file() else 0
            except OSError:
                continue
    return total
