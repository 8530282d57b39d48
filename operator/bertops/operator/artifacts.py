"""Reads and verifies model artifact manifests for the operator, without torch.

Local paths (and ``file://`` URIs) are verified here with the sha256 manifest; other
stores are verified by the steps that read them (``evaluate``/``compress``) and the
model server. Called by :mod:`bertops.operator.reconcile`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import ValidationError

from bertops.api.artifacts import MODEL_MANIFEST, ModelManifest, verify_folder
from bertops.operator.planners.model import ArtifactInfo


def local_path(uri: str) -> Path | None:
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    if "://" not in uri:
        return Path(uri)
    return None


def read_model_artifact(uri: str) -> ArtifactInfo | None:
    """The verified manifest at uri; None when it cannot be read from here (yet)."""
    folder = local_path(uri)
    if folder is None or not folder.is_dir():
        return None
    manifest_file = folder / MODEL_MANIFEST
    if not manifest_file.is_file():
        return ArtifactInfo(uri=uri, problems=[f"missing {MODEL_MANIFEST}"])
    text = manifest_file.read_bytes()
    try:
        manifest = ModelManifest.model_validate_json(text)
    except ValidationError as error:
        return ArtifactInfo(uri=uri, problems=[f"invalid manifest: {error.errors()[0]['msg']}"])
    return ArtifactInfo(
        uri=uri,
        manifest=manifest,
        manifest_sha256=hashlib.sha256(text).hexdigest(),
        problems=verify_folder(folder, manifest.files),
    )
