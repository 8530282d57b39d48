"""Model artifacts for the server: resolve a model URI to a local folder, read its
``bertops-model.json`` manifest and verify every file's sha256 before anything is loaded.

Called by :mod:`bertops.server.cli` (to refuse a bad artifact before the server starts) and
by :mod:`bertops.server.model` (which only ever loads a :class:`VerifiedArtifact`). Standard
library + pydantic only, so verifying never needs torch.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from pydantic import ValidationError

from bertops.api.artifacts import MODEL_MANIFEST, ModelManifest, verify_folder

# Suffixes of formats that execute code when loaded; an artifact must never carry them,
# even if its manifest lists them (the loader would not read them, but their presence
# means the producer did something we do not support).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class ArtifactError(Exception):
    """The artifact is missing, incomplete, tampered with or of an unsupported kind."""


@dataclass(frozen=True)
class VerifiedArtifact:
    """A local folder whose files matched its manifest when it was checked."""

    folder: Path
    manifest: ModelManifest
    digest: str
    """sha256 over the manifest's file list: changes whenever any weight or file changes."""

    @property
    def version(self) -> str:
        return self.manifest.name


def resolve_uri(uri: str, cache_dir: Path | None = None) -> Path:
    """A local folder for ``uri``: a path, ``file://``, or any fsspec URL (copied once
    into a cache folder named after the URI, then verified like a local one)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme == "file" else uri).expanduser()
    if len(parsed.scheme) == 1:  # a Windows drive letter, not a scheme
        return Path(uri)
    try:
        import fsspec
    except ImportError as error:
        raise ArtifactError(f"{uri}: remote URIs need fsspec installed") from error
    base = cache_dir or Path(os.environ.get("BERTOPS_HOME", "~/.bertops")).expanduser() / "cache"
    local = base / "models" / hashlib.sha256(uri.encode()).hexdigest()[:24]
    if not (local / MODEL_MANIFEST).is_file():
        fs, path = fsspec.core.url_to_fs(uri)
        partial = local.with_name(local.name + ".partial")
        fs.get(path.rstrip("/") + "/", str(partial), recursive=True)
        # Rename only a complete copy, so an interrupted download is never reused.
        partial.rename(local)
    return local


def read_manifest(folder: Path) -> ModelManifest:
    path = folder / MODEL_MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{folder}: no {MODEL_MANIFEST}; not a bertops model artifact")
    try:
        return ModelManifest.model_validate_json(path.read_bytes())
    except ValidationError as error:
        raise ArtifactError(f"{path}: invalid manifest: {error}") from error


def _required_files(manifest: ModelManifest) -> list[str]:
    if manifest.format == "onnx":
        return ["model.onnx"]
    return ["config.json"]


def verify_artifact(uri: str | Path, cache_dir: Path | None = None) -> VerifiedArtifact:
    """Resolve and verify; raises :class:`ArtifactError` naming every problem found."""
    folder = resolve_uri(str(uri), cache_dir)
    if not folder.is_dir():
        raise ArtifactError(f"{uri}: no such artifact folder")
    manifest = read_manifest(folder)
    problems: list[str] = []
    for entry in manifest.files:
        pure = PurePosixPath(entry.path)
        if pure.is_absolute() or ".." in pure.parts:
            problems.append(f"manifest path escapes the artifact: {entry.path}")
        if entry.path.endswith(PICKLE_SUFFIXES):
            problems.append(f"pickle-based file not allowed: {entry.path}")
    if problems:  # never hash outside the folder
        raise ArtifactError(f"{folder}: refused: " + "; ".join(problems))
    problems = verify_folder(folder, manifest.files)
    listed = {entry.path for entry in manifest.files}
    problems += [f"missing required file {name}" for name in _required_files(manifest)
                 if name not in listed]
    if manifest.format == "safetensors" and not any(
        name.endswith(".safetensors") for name in listed
    ):
        problems.append("no .safetensors weights listed")
    if not listed & {"tokenizer.json", "vocab.txt"}:
        problems.append("no tokenizer (tokenizer.json or vocab.txt)")
    if problems:
        raise ArtifactError(f"{folder}: refused: " + "; ".join(problems))
    digest = hashlib.sha256(
        "\n".join(f"{f.path} {f.sha256}" for f in sorted(manifest.files, key=lambda f: f.path))
        .encode()
    ).hexdigest()
    return VerifiedArtifact(folder=folder, manifest=manifest, digest=digest)
