"""The server refuses artifacts that do not match their sha256 manifest (tampered,
incomplete, carrying pickles), before anything is loaded or listening."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertops.api.artifacts import MODEL_MANIFEST
from bertops.server.app import create_app
from bertops.server.artifact import ArtifactError, verify_artifact
from bertops.server.cli import app as cli
from bertops.server.model import ServedModel


@pytest.fixture
def artifact(tiny_artifact: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_artifact, tmp_path / "model"))


def test_intact_artifact_verifies(artifact: Path) -> None:
    verified = verify_artifact(f"file://{artifact}")
    assert verified.version == "tiny-v1"
    assert verified.manifest.labels == ["negative", "neutral", "positive"]
    assert len(verified.digest) == 64


def test_tampered_weights_are_refused(artifact: Path) -> None:
    weights = artifact / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, one bit pattern changed
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"sha256 mismatch for model.safetensors"):
        verify_artifact(artifact)
    # The server refuses at construction, before it listens or loads anything.
    with pytest.raises(ArtifactError):
        create_app(ServedModel(str(artifact)))


def test_incomplete_artifact_is_refused(artifact: Path) -> None:
    (artifact / "config.json").unlink()
    with pytest.raises(ArtifactError, match=r"missing file config\.json"):
        verify_artifact(artifact)


def test_extra_pickle_is_refused(artifact: Path) -> None:
    (artifact / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ArtifactError, match=r"unexpected file pytorch_model\.bin"):
        verify_artifact(artifact)


def test_manifest_paths_cannot_escape(artifact: Path) -> None:
    manifest = json.loads((artifact / MODEL_MANIFEST).read_text())
    manifest["files"].append({"path": "../../etc/passwd", "sha256": "0" * 64, "bytes": 1})
    (artifact / MODEL_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="escapes the artifact"):
        verify_artifact(artifact)


def test_folder_without_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a bertops model artifact"):
        verify_artifact(tmp_path)


def test_cli_refuses_a_tampered_artifact(artifact: Path) -> None:
    (artifact / "tokenizer.json").write_text("{}")
    result = CliRunner().invoke(cli, ["serve", "--model", str(artifact), "--port", "1"])
    assert result.exit_code == 2
    assert "refusing to serve" in result.output
    assert "sha256 mismatch for tokenizer.json" in result.output
