"""Model artifacts for the server: resolve a model URI to a local folder, verify it with
the shared checks of :mod:`bertops.api.artifacts`, and keep a private copy of exactly the
bytes that verified, which is what the model is then loaded from.

Called by :mod:`bertops.server.cli` (to refuse a bad artifact before the server starts) and
by :mod:`bertops.server.model` (which only ever loads a :class:`VerifiedArtifact`). The
checks themselves live in ``bertops.api.artifacts`` (shared with the trainer and the
operator); this module adds only the remote fetch (fsspec) and the private copy.
Standard library + pydantic (+ fsspec for remote URIs), so verifying never needs torch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

from bertops.api.artifacts import (
    MODEL_MANIFEST,
    PICKLE_SUFFIXES,
    ArtifactError,
    ModelManifest,
    check_model,
    listing_digest,
    local_path,
)

__all__ = ["PICKLE_SUFFIXES", "ArtifactError", "VerifiedArtifact", "verify_artifact"]


@dataclass(frozen=True)
class VerifiedArtifact:
    """A verified model: ``folder`` is a private copy written by the same reads that
    hashed the files, so loading from it cannot see a file swapped after the check."""

    folder: Path
    manifest: ModelManifest
    digest: str
    """sha256 over the manifest's file list: changes whenever any weight or file changes."""
    source: Path
    manifest_sha256: str = ""
    """sha256 of the manifest's bytes as verified (BertModel status.manifestSha256)."""

    @property
    def version(self) -> str:
        return self.manifest.name

    def release(self) -> None:
        """Drop the private copy once the model is in memory (the manifest stays)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def resolve_uri(uri: str, cache_dir: Path | None = None) -> Path:
    """A local folder for ``uri``: a path, ``file://``, or any fsspec URL (copied once
    into a cache folder named after the URI, then verified like a local one)."""
    local = local_path(uri)
    if local is not None:
        return local
    try:
        import fsspec
    except ImportError as error:
        raise ArtifactError(f"{uri}: remote URIs need fsspec installed") from error
    base = cache_dir or Path(os.environ.get("BERTOPS_HOME", "~/.bertops")).expanduser() / "cache"
    cached = base / "models" / hashlib.sha256(uri.encode()).hexdigest()[:24]
    if not (cached / MODEL_MANIFEST).is_file():
        fs, path = fsspec.core.url_to_fs(uri)
        partial = cached.with_name(f"{cached.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        fs.get(path.rstrip("/") + "/", str(partial), recursive=True)
        # Rename only a complete copy, so an interrupted download is never reused; the
        # copy is verified like any local folder before anything loads from it.
        shutil.rmtree(cached, ignore_errors=True)
        partial.rename(cached)
    return cached


def verify_artifact(uri: str | Path, cache_dir: Path | None = None) -> VerifiedArtifact:
    """Resolve, verify and copy; raises :class:`ArtifactError` naming every problem."""
    folder = resolve_uri(str(uri), cache_dir)
    if not folder.is_dir():
        raise ArtifactError(f"{uri}: no such artifact folder")
    snapshot = Path(tempfile.mkdtemp(prefix="bertops-verified-"))  # mode 0700
    try:
        check = check_model(folder, copy_to=snapshot)
        if check.manifest is None:
            raise ArtifactError("; ".join(check.problems))
        if check.problems:
            raise ArtifactError(f"{folder}: refused: " + "; ".join(check.problems))
    except BaseException:
        shutil.rmtree(snapshot, ignore_errors=True)
        raise
    verified = VerifiedArtifact(
        folder=snapshot,
        manifest=check.manifest,
        digest=listing_digest(check.manifest.files),
        source=folder,
        manifest_sha256=check.manifest_sha256 or "",
    )
    # Removed at the latest when the artifact is garbage-collected or the process exits.
    weakref.finalize(verified, shutil.rmtree, snapshot, True)
    return verified
