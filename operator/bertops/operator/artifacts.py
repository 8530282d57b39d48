"""Reads and verifies model artifact manifests for the operator, without torch.

A thin user of :mod:`bertops.api.artifacts`: local paths (and ``file://`` URIs) get the
same checks as the model server (sha256 of every file, no escaping paths or symlinks, no
pickles, a capped walk), reported as problems instead of raised. Other stores are
verified by the steps that read them (``evaluate``/``compress``) and the model server.
Called by :mod:`bertops.operator.reconcile`.
"""

from __future__ import annotations

from bertops.api.artifacts import check_model, local_path
from bertops.operator.objects import ArtifactInfo


def read_model_artifact(uri: str) -> ArtifactInfo | None:
    """The verified manifest at uri; None when it cannot be read from here (yet)."""
    folder = local_path(uri)
    if folder is None or not folder.is_dir():
        return None
    check = check_model(folder)
    return ArtifactInfo(
        uri=uri,
        manifest=check.manifest,
        manifest_sha256=check.manifest_sha256,
        problems=check.problems,
    )
