"""The shared artifact checks of bertops.api.artifacts, used by the trainer, the model
server and the operator alike: manifest paths and symlinks cannot leave the folder,
pickle-based files are refused, and the walk and the hashing are capped, so a folder such
as ``/`` fails fast instead of being hashed. Standard library only (no torch)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from bertops.api import artifacts
from bertops.api.artifacts import (
    MODEL_MANIFEST,
    FileDigest,
    Limits,
    ModelManifest,
    check_model,
    digest_folder,
    local_path,
    verify_folder,
)
from bertops.operator.artifacts import read_model_artifact


def digest_of(path: Path, relative: str) -> FileDigest:
    data = path.read_bytes()
    return FileDigest(path=relative, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))


def write_model(folder: Path, files: list[FileDigest] | None = None) -> Path:
    """A model folder with the files the shared model checks require (contents fake)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text(f"{name} content")
    listed = files if files is not None else digest_folder(folder)
    manifest = ModelManifest(name="m", labels=["a", "b"], files=listed)
    (folder / MODEL_MANIFEST).write_text(manifest.model_dump_json(by_alias=True))
    return folder


def test_intact_folder_verifies_everywhere(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m")
    assert check_model(folder).problems == []
    info = read_model_artifact(f"file://{folder}")
    assert info is not None and info.problems == [] and info.manifest is not None


@pytest.mark.parametrize("uri", ["/x/y", "file:///x/y", "file://localhost/x/y"])
def test_local_uris_resolve_to_paths(uri: str) -> None:
    assert local_path(uri) == Path("/x/y")


def test_remote_uris_are_not_local() -> None:
    assert local_path("s3://bucket/m") is None
    assert local_path("simplecache::s3://bucket/m") is None


def test_symlink_to_a_file_outside_is_refused_even_with_the_right_hash(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the artifact")
    folder = tmp_path / "m"
    folder.mkdir()
    os.symlink(secret, folder / "vocab.txt")
    listed = digest_folder(write_model(folder))  # lists vocab.txt with the secret's sha256
    write_model(folder, listed)
    problems = check_model(folder).problems
    assert "symlink points outside the artifact: vocab.txt" in problems
    assert "manifest path escapes the artifact: vocab.txt" in problems
    # The operator (which verified nothing of the kind before) now reports it too.
    info = read_model_artifact(str(folder))
    assert info is not None and "manifest path escapes the artifact: vocab.txt" in info.problems


def test_symlinked_folder_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "weights.safetensors").write_text("x")
    folder = write_model(tmp_path / "m")
    os.symlink(outside, folder / "extra")
    listed = [
        *digest_folder(folder),
        digest_of(outside / "weights.safetensors", "extra/weights.safetensors"),
    ]
    write_model(folder, listed)
    problems = check_model(folder).problems
    assert "symlink points outside the artifact: extra" in problems
    assert "manifest path escapes the artifact: extra/weights.safetensors" in problems


def test_symlink_inside_the_folder_is_fine(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m")
    os.symlink(folder / "tokenizer.json", folder / "vocab.txt")
    write_model(folder, digest_folder(folder))
    assert check_model(folder).problems == []


def test_dotdot_paths_are_refused_before_any_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_model(tmp_path / "m")
    listed = [*digest_folder(folder), FileDigest(path="../../etc/passwd", sha256="0" * 64, bytes=1)]
    monkeypatch.setattr(artifacts, "_matches", _no_hashing)
    problems = verify_folder(folder, listed)
    assert problems == ["manifest path escapes the artifact: ../../etc/passwd"]


@pytest.mark.parametrize(
    "name", ["pytorch_model.bin", "model.pt", "weights.PTH", "x.pkl", "x.pickle", "last.ckpt"]
)
def test_listed_pickle_files_are_refused(tmp_path: Path, name: str) -> None:
    folder = write_model(tmp_path / "m")
    (folder / name).write_bytes(b"\x80\x04 pickle")
    write_model(folder, digest_folder(folder))  # listed, with the right sha256
    assert f"pickle-based file not allowed: {name}" in check_model(folder).problems


def _no_hashing(*_: object) -> bool:
    raise AssertionError("a file was hashed")


def test_the_walk_is_capped_before_anything_is_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_model(tmp_path / "m")
    for index in range(30):
        (folder / f"junk-{index}").write_text("x")
    monkeypatch.setattr(artifacts, "_matches", _no_hashing)
    problems = check_model(folder, Limits(max_files=20)).problems
    assert any("more than 20 entries" in p for p in problems), problems


def test_listed_bytes_are_capped_before_anything_is_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    huge = [
        FileDigest(path=f"shard-{i}.safetensors", sha256="0" * 64, bytes=1 << 40) for i in range(3)
    ]
    write_model(folder, huge)
    monkeypatch.setattr(artifacts, "_matches", _no_hashing)
    problems = check_model(folder).problems
    assert any("over the limit" in p for p in problems), problems


def test_the_filesystem_root_is_not_an_artifact(monkeypatch: pytest.MonkeyPatch) -> None:
    """artifactUri: / must fail at once, not hash the machine."""
    monkeypatch.setattr(artifacts, "_matches", _no_hashing)
    info = read_model_artifact("/")
    assert info is not None and info.manifest is None
    assert "no bertops-model.json" in info.problems[0]


def test_oversized_manifest_is_refused(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m")
    (folder / MODEL_MANIFEST).write_bytes(b" " * 2048)
    problems = check_model(folder, Limits(max_manifest_bytes=1024)).problems
    assert "not a manifest" in problems[0]


def test_copy_holds_exactly_the_verified_bytes(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "m")
    copy = tmp_path / "copy"
    assert check_model(folder, copy_to=copy).problems == []
    assert sorted(p.name for p in copy.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    assert (copy / "model.safetensors").read_bytes() == b"model.safetensors content"
