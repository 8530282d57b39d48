"""Reads and verifies model artifact manifests for the operator, without torch.

A thin user of :mod:`bertops.api.artifacts`: local paths (and ``file://`` URIs) get the
same checks as the model server (sha256 of every file, no escaping paths or symlinks, no
pickles, a capped walk), reported as problems instead of raised. An object store
(``s3://...``, through fsspec) is read for its manifest only: downloading every weight to
hash it here would double each model's traffic, and whoever fetches the files (the model
server, the evaluate and compress steps) verifies each one against this manifest, whose
sha256 the operator records and the server pins. Called by
:mod:`bertops.operator.reconcile`.
"""

from __future__ import annotations

import hashlib
import logging

from pydantic import ValidationError

from bertops.api.artifacts import (
    DEFAULT_LIMITS,
    MODEL_MANIFEST,
    ModelManifest,
    check_model,
    local_path,
    model_problems,
)
from bertops.operator.objects import ArtifactInfo

log = logging.getLogger(__name__)


def read_model_artifact(uri: str) -> ArtifactInfo | None:
    """The verified manifest at uri; None when it cannot be read from here (yet)."""
    folder = local_path(uri)
    if folder is None:
        return _read_remote_manifest(uri)
    if not folder.is_dir():
        return None
    check = check_model(folder)
    return ArtifactInfo(
        uri=uri,
        manifest=check.manifest,
        manifest_sha256=check.manifest_sha256,
        problems=check.problems,
    )


def _read_remote_manifest(uri: str) -> ArtifactInfo | None:
    """The manifest of a model in an object store; None while there is none (a model is
    published manifest last) or the store cannot be reached (tried again next pass)."""
    from fsspec.core import url_to_fs

    limit = DEFAULT_LIMITS.max_manifest_bytes
    try:
        fs, path = url_to_fs(uri)
        manifest_path = f"{path.rstrip('/')}/{MODEL_MANIFEST}"
        # The driver caches listings per process, and this process lives long: a manifest
        # republished since the last pass would otherwise be read from a stale entry.
        fs.invalidate_cache(manifest_path)
        with fs.open(manifest_path, "rb") as handle:
            raw = handle.read(limit + 1)
    except FileNotFoundError:
        return None
    except Exception as error:  # the store's driver has its own errors: all mean "not now"
        # The type and message only: a driver's message names the bucket, never the key.
        log.warning(
            "cannot read %s from %s: %s: %s", MODEL_MANIFEST, uri, type(error).__name__, error
        )
        return None
    if len(raw) > limit:
        return ArtifactInfo(uri, problems=[f"{MODEL_MANIFEST} is over {limit} bytes"])
    try:
        manifest = ModelManifest.model_validate_json(raw)
    except ValidationError as error:
        return ArtifactInfo(uri, problems=[f"invalid {MODEL_MANIFEST}: {error.errors()[0]['msg']}"])
    return ArtifactInfo(
        uri=uri,
        manifest=manifest,
        manifest_sha256=hashlib.sha256(raw).hexdigest(),
        problems=model_problems(manifest),
    )
