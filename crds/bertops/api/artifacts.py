"""Artifact manifests: what a prepared dataset or a model folder contains, with the
sha256 of every file, so a consumer verifies before it loads (the model server refuses a
tampered or incomplete artifact; nothing is ever unpickled).

Written by the trainer's steps, read by the server and the operator. Hashing uses the
standard library only, so the operator can verify without torch.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

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


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def digest_folder(
    folder: Path, exclude: tuple[str, ...] = (MODEL_MANIFEST, DATASET_MANIFEST)
) -> list[FileDigest]:
    """FileDigest of every regular file below folder, sorted by path."""
    return [
        FileDigest(
            path=p.relative_to(folder).as_posix(), sha256=sha256_file(p), bytes=p.stat().st_size
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in exclude
    ]


def verify_folder(folder: Path, files: list[FileDigest]) -> list[str]:
    """Problems found (missing, changed, unexpected files); empty when the folder matches."""
    problems = []
    expected = {f.path: f for f in files}
    for digest in files:
        path = folder / digest.path
        if not path.is_file():
            problems.append(f"missing file {digest.path}")
        elif path.stat().st_size != digest.bytes or sha256_file(path) != digest.sha256:
            problems.append(f"sha256 mismatch for {digest.path}")
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if (
            path.is_file()
            and relative not in expected
            and path.name
            not in (
                MODEL_MANIFEST,
                DATASET_MANIFEST,
            )
        ):
            problems.append(f"unexpected file {relative}")
    return problems
