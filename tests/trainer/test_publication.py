"""Publishing artifacts: one writer for trained and compressed models (manifest last,
nothing published on failure), local publication flushed to disk around the rename, and
remote (fsspec) publication through a unique temporary prefix with the manifest written
last, never removing the target and moving a copy over it."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import fsspec
import pytest

from bertops.api.artifacts import MODEL_MANIFEST, ModelManifest, check_model
from bertops.trainer import artifacts_io, model_artifact
from bertops.trainer.errors import BadInputError


class FakeTokenizer:
    def save_pretrained(self, folder: str) -> None:
        (Path(folder) / "tokenizer.json").write_text('{"fake": true}')


def _weights(folder: Path) -> None:
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)


def _manifest() -> ModelManifest:
    return ModelManifest(name="m", labels=["no", "yes"], files=[], measurements={"parameters": 1})


def test_one_writer_publishes_a_verifiable_model(tmp_path: Path) -> None:
    target = tmp_path / "model"

    def sizes(folder: Path) -> dict[str, Any]:
        return {"bytesOnDisk": sum(p.stat().st_size for p in folder.iterdir())}

    manifest, sha = model_artifact.write(
        str(target),
        _manifest(),
        save_weights=_weights,
        tokenizer=FakeTokenizer(),
        metrics={"test": None},
        measure=sizes,
    )
    check = check_model(target)
    assert check.problems == [] and check.manifest_sha256 == sha
    assert (
        manifest.measurements
        == {"parameters": 1, "bytesOnDisk": manifest.measurements["bytesOnDisk"]}
        and manifest.created_at is not None
    )
    assert json.loads((target / "labels.json").read_text())["label2id"] == {"no": 0, "yes": 1}
    assert sorted(f.path for f in manifest.files) == [
        "config.json",
        "labels.json",
        "metrics.json",
        "model.safetensors",
        "tokenizer.json",
    ]


def test_one_writer_publishes_nothing_when_a_part_fails(tmp_path: Path) -> None:
    def broken(folder: Path) -> None:
        _weights(folder)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        model_artifact.write(
            str(tmp_path / "model"),
            _manifest(),
            save_weights=broken,
            tokenizer=FakeTokenizer(),
            metrics={},
        )
    assert list(tmp_path.iterdir()) == []


def test_local_publication_is_flushed_around_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, Path.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(self: Path, target: Any) -> Any:
        events.append(("rename", str(target)))
        return real_rename(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "rename", rename)
    target = tmp_path / "artifact"
    with artifacts_io.staged_folder(str(target)) as folder:
        (folder / "sub").mkdir()
        (folder / "sub" / "a.bin.json").write_text("a")
        (folder / MODEL_MANIFEST).write_text("{}")
    renamed = events.index(("rename", str(target)))
    flushed_before = {Path(path).name for kind, path in events[:renamed] if kind == "fsync"}
    assert {"a.bin.json", MODEL_MANIFEST, "sub"} <= flushed_before
    assert any(name.startswith(".artifact.tmp-") for name in flushed_before)  # the folder
    assert ("fsync", str(tmp_path)) in events[renamed:]  # the rename itself is durable


@pytest.fixture
def store() -> Any:
    fs = fsspec.filesystem("memory")
    root = f"/pub-{uuid.uuid4().hex[:8]}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _record(fs: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every call of the store's write and delete operations, as (operation, path)."""
    log: list[tuple[str, str]] = []
    cls = type(fs)
    for name, where in (
        ("rm", 1),
        ("rm_file", 1),
        ("mv", 1),
        ("put_file", 2),
        ("copy", 2),
        ("pipe_file", 1),
    ):
        real = getattr(cls, name)

        def wrapper(
            self: Any,
            *args: Any,
            _real: Any = real,
            _name: str = name,
            _where: int = where,
            **kw: Any,
        ) -> Any:
            log.append((_name, str(args[_where - 1]).rstrip("/")))
            return _real(self, *args, **kw)

        monkeypatch.setattr(cls, name, wrapper)
    return log


def test_remote_publication_writes_the_manifest_last_and_never_replaces_the_target(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, root = store
    target = f"{root}/model"
    with artifacts_io.staged_folder(f"memory://{target}") as folder:
        (folder / "stale.txt").write_text("only in v1")
        (folder / "weights.txt").write_text("v1")
        (folder / MODEL_MANIFEST).write_text("v1")
    log = _record(fs, monkeypatch)
    with artifacts_io.staged_folder(f"memory://{target}") as folder:
        (folder / "weights.txt").write_text("v2")
        (folder / MODEL_MANIFEST).write_text("v2")
    assert not [entry for entry in log if entry[0] == "mv"]
    assert ("rm", target) not in log  # never rm-then-mv of the target
    uploads = [path for op, path in log if op == "put_file"]
    assert uploads and not any(path.startswith(f"{target}/") for path in uploads)
    into_target = [
        path
        for op, path in log
        if op in ("copy", "put_file", "pipe_file") and path.startswith(f"{target}/")
    ]
    assert into_target[-1] == f"{target}/{MODEL_MANIFEST}"  # published by the manifest
    assert ("rm_file", f"{target}/{MODEL_MANIFEST}") in log  # the old one went down first
    assert sorted(fs.find(root)) == [f"{target}/{MODEL_MANIFEST}", f"{target}/weights.txt"]
    assert fs.cat(f"{target}/weights.txt") == b"v2"


def _publish_v2(uri: str) -> None:
    with artifacts_io.staged_folder(uri) as folder:
        (folder / "weights.txt").write_text("v2")
        (folder / MODEL_MANIFEST).write_text("v2")


def test_failed_remote_upload_leaves_the_old_artifact(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, root = store
    target = f"{root}/model"
    with artifacts_io.staged_folder(f"memory://{target}") as folder:
        (folder / "weights.txt").write_text("v1")
        (folder / MODEL_MANIFEST).write_text("v1")
    real_put = type(fs).put_file
    calls = {"n": 0}

    def flaky(self: Any, *args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("store went away")
        return real_put(self, *args, **kw)

    monkeypatch.setattr(type(fs), "put_file", flaky)
    with pytest.raises(ConnectionError):
        _publish_v2(f"memory://{target}")
    assert sorted(fs.find(root)) == [f"{target}/{MODEL_MANIFEST}", f"{target}/weights.txt"]
    assert fs.cat(f"{target}/{MODEL_MANIFEST}") == b"v1"


@pytest.mark.parametrize("where", ["local", "memory"])
def test_a_missing_input_folder_is_bad_input(tmp_path: Path, where: str) -> None:
    uri = str(tmp_path / "nowhere") if where == "local" else f"memory:///{uuid.uuid4().hex}"
    with (
        pytest.raises(BadInputError, match=r"model artifact .* does not exist or is not a folder"),
        artifacts_io.local_folder(uri, "model artifact"),
    ):
        pass
