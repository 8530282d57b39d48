"""``bertops server serve --expect-manifest-sha256``: the operator pins the exact model
version a server may load (the BertModel's status.manifestSha256); a server handed any
other artifact refuses before it listens."""

from __future__ import annotations

import hashlib
from pathlib import Path

from typer.testing import CliRunner

from bertops.api.artifacts import MODEL_MANIFEST, check_model
from bertops.server.artifact import verify_artifact
from bertops.server.cli import app as cli


def test_verified_artifact_carries_the_manifest_sha256(tiny_artifact: Path) -> None:
    expected = hashlib.sha256((tiny_artifact / MODEL_MANIFEST).read_bytes()).hexdigest()
    assert verify_artifact(tiny_artifact).manifest_sha256 == expected
    assert check_model(tiny_artifact).manifest_sha256 == expected  # what the operator records


def test_serve_refuses_an_unexpected_manifest(tiny_artifact: Path) -> None:
    wrong = "0" * 64
    result = CliRunner().invoke(
        cli,
        ["serve", "--model", str(tiny_artifact), "--port", "1", "--expect-manifest-sha256", wrong],
    )
    assert result.exit_code == 2, result.output
    assert f"is not the expected {wrong}" in result.output
    assert "refusing to serve" in result.output
