"""bertops.modelio.publish, the one atomic folder publication of the trainer and the drift
monitor: on a real local filesystem (rename into place, the old folder put back when the
rename fails, a file or symlink never replaced) and on fsspec's memory:// store (the
caller's "last" files written last, stale files removed, a failed upload or copy never
leaving a target whose last file its other files do not match), plus reading inputs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from bertops.modelio import publish


def hidden(folder: Path) -> list[str]:
    """Staging or moved-aside folders a publication could leave next to its target."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def fill_then_fail(uri: str, seen: list[Path]) -> None:
    with publish.staged_folder(uri, last="m.json") as folder:
        seen.append(folder)
        (folder / "m.json").write_text("v2")
        raise RuntimeError("half written")


def publish_local(target: Path, files: dict[str, str]) -> None:
    with publish.staged_folder(str(target), last="manifest.json") as folder:
        for name, text in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)


# -- local ---------------------------------------------------------------------------------


def test_local_publication_replaces_the_folder_as_a_whole(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "out"
    publish_local(target, {"a.txt": "v1", "stale.txt": "v1", "manifest.json": "v1"})
    publish_local(target, {"a.txt": "v2", "sub/b.txt": "v2", "manifest.json": "v2"})
    assert tree(target) == {"a.txt": "v2", "sub/b.txt": "v2", "manifest.json": "v2"}
    assert hidden(target.parent) == []


def test_file_uri_is_local(tmp_path: Path) -> None:
    with publish.staged_folder(f"file://{tmp_path}/out", last=()) as folder:
        assert folder.parent == tmp_path
        (folder / "a.txt").write_text("x")
    assert tree(tmp_path / "out") == {"a.txt": "x"}


def test_local_failure_in_the_body_leaves_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out"
    publish_local(target, {"a.txt": "v1"})
    seen: list[Path] = []
    with pytest.raises(RuntimeError, match="half"):
        fill_then_fail(str(target), seen)
    assert seen and not seen[0].exists()
    assert tree(target) == {"a.txt": "v1"}
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_a_file_or_symlink_at_the_target_is_never_replaced(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    if kind == "file":
        target.write_text("keep me")
    else:
        target.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(NotADirectoryError):
        publish_local(target, {"a.txt": "new"})
    if kind == "file":
        assert target.read_text() == "keep me"
    else:
        assert target.is_symlink() and target.readlink() == elsewhere
    assert tree(elsewhere) == {"keep.txt": "keep"}
    assert hidden(tmp_path) == []


def test_a_failed_rename_puts_the_old_folder_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out"
    publish_local(target, {"a.txt": "v1"})
    real_rename = Path.rename
    renames: list[tuple[str, str]] = []

    def rename(self: Path, to: Any) -> Any:
        renames.append((self.name, Path(to).name))
        if self.name.startswith(".out.tmp-"):
            raise OSError(28, "No space left on device", str(to))
        return real_rename(self, to)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="No space"):
        publish_local(target, {"a.txt": "v2"})
    assert [to for _, to in renames][-1] == "out"  # the old folder went aside, then back
    assert renames[0][0] == "out" and renames[0][1].startswith(".out.old-")
    assert tree(target) == {"a.txt": "v1"}
    assert hidden(tmp_path) == []


def test_fsync_path_flushes_files_and_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file and folder of a tree is flushed, files before the folder holding them
    (a rename is durable only once its folder is), and no descriptor is left open."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "g").write_text("y")
    (tmp_path / "f").write_text("x")
    flushed: list[str] = []
    real_fsync = os.fsync

    def recording(fd: int) -> None:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    open_before = len(os.listdir("/proc/self/fd"))
    publish.fsync_path(tmp_path / "f")
    publish.fsync_path(tmp_path)
    assert flushed == [str(tmp_path / "f"), str(tmp_path)]
    flushed.clear()
    publish.fsync_tree(tmp_path)
    assert sorted(flushed) == sorted(
        str(p) for p in (tmp_path / "sub" / "g", tmp_path / "sub", tmp_path / "f", tmp_path)
    )
    assert flushed.index(str(tmp_path / "sub" / "g")) < flushed.index(str(tmp_path / "sub"))
    assert flushed[-1] == str(tmp_path)  # the top folder last
    assert len(os.listdir("/proc/self/fd")) == open_before


# -- remote (memory://) --------------------------------------------------------------------


@pytest.fixture
def store() -> Iterator[tuple[Any, str]]:
    fs = fsspec.filesystem("memory")
    root = f"/publish-{uuid.uuid4().hex[:8]}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def record(fs: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The store's writes and deletes, as (operation, destination path)."""
    log: list[tuple[str, str]] = []
    cls = type(fs)
    for name, where in (("put_file", 1), ("cp_file", 1), ("rm_file", 0), ("rm", 0)):
        real = getattr(cls, name)

        def wrapper(
            self: Any, *args: Any, _real: Any = real, _name: str = name, _at: int = where, **kw: Any
        ) -> Any:
            log.append((_name, "/" + str(args[_at]).strip("/")))
            return _real(self, *args, **kw)

        monkeypatch.setattr(cls, name, wrapper)
    return log


def publish_remote(uri: str, files: dict[str, str], last: Any) -> None:
    with publish.staged_folder(uri, last=last) as folder:
        for name, text in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)


def test_remote_publication_writes_last_files_last_and_removes_stale_ones(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, root = store
    target = f"{root}/out"
    last = ["z.json", "a.json"]  # in this order, after everything else
    v1 = {"data.txt": "v1", "old/stale.txt": "v1", "z.json": "v1", "a.json": "v1"}
    publish_remote(f"memory://{target}", v1, last)
    log = record(fs, monkeypatch)
    v2 = {"data.txt": "v2", "sub/more.txt": "v2", "z.json": "v2", "a.json": "v2"}
    publish_remote(f"memory://{target}", v2, last)

    assert sorted(fs.find(root)) == sorted(f"{target}/{name}" for name in v2)
    assert all(fs.cat(f"{target}/{name}") == b"v2" for name in v2)
    into_target = [p for op, p in log if op in ("put_file", "cp_file") and p.startswith(target)]
    assert into_target[-2:] == [f"{target}/z.json", f"{target}/a.json"]
    assert not [p for op, p in log if op == "put_file" and p.startswith(f"{target}/")]
    first_copy = next(i for i, (op, p) in enumerate(log) if op == "cp_file")
    taken_down = {p for op, p in log[:first_copy] if op == "rm_file"}
    assert {f"{target}/z.json", f"{target}/a.json"} <= taken_down  # old last files first
    assert ("rm_file", f"{target}/old/stale.txt") in log
    assert ("rm", target) not in log  # the target is never removed wholesale
    assert [p for p in fs.find(root, withdirs=True) if ".tmp-" in p] == []


def test_one_last_file_as_a_string(store: Any) -> None:
    fs, root = store
    publish_remote(f"memory://{root}/out", {"report.json": "{}", "r.html": "<html>"}, "report.json")
    assert sorted(fs.find(root)) == [f"{root}/out/r.html", f"{root}/out/report.json"]


@pytest.mark.parametrize("failing", ["put_file", "cp_file"])
def test_a_failed_upload_never_leaves_a_mismatched_last_file(
    store: Any, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    fs, root = store
    target = f"{root}/out"
    publish_remote(
        f"memory://{target}", {"data.txt": "v1", "manifest.json": "v1"}, ["manifest.json"]
    )
    real = getattr(type(fs), failing)

    def broken(self: Any, *args: Any, **kw: Any) -> Any:
        raise ConnectionError("store went away")

    monkeypatch.setattr(type(fs), failing, broken)
    with pytest.raises(ConnectionError):
        publish_remote(
            f"memory://{target}", {"data.txt": "v2", "manifest.json": "v2"}, ["manifest.json"]
        )
    monkeypatch.setattr(type(fs), failing, real)
    if failing == "put_file":  # nothing reached the target: the old folder stands
        assert fs.cat(f"{target}/manifest.json") == b"v1"
        assert fs.cat(f"{target}/data.txt") == b"v1"
    else:  # the copy failed after the old manifest went down: no manifest, not a wrong one
        assert not fs.exists(f"{target}/manifest.json")
    assert [p for p in fs.find(root, withdirs=True) if ".tmp-" in p] == []


def test_remote_failure_in_the_body_uploads_nothing(store: Any) -> None:
    fs, root = store
    seen: list[Path] = []
    with pytest.raises(RuntimeError, match="half"):
        fill_then_fail(f"memory://{root}/out", seen)
    assert not fs.exists(f"{root}/out")
    assert seen and not seen[0].exists()


# -- reading inputs ------------------------------------------------------------------------


def test_local_folder_is_the_folder_itself(tmp_path: Path) -> None:
    with publish.local_folder(str(tmp_path), "input") as folder:
        assert folder == tmp_path


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_missing_local_input_is_named(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "in"
    if kind == "file":
        path.write_text("x")
    with (
        pytest.raises(publish.MissingInputError, match=r"the dataset .*/in does not exist"),
        publish.local_folder(str(path), "the dataset"),
    ):
        pass


def test_a_remote_input_is_fetched_once_and_removed_after(store: Any) -> None:
    _, root = store
    publish_remote(f"memory://{root}/in", {"a.txt": "a", "sub/b.txt": "b"}, ())
    with publish.local_folder(f"memory://{root}/in", "input") as folder:
        assert tree(folder) == {"a.txt": "a", "sub/b.txt": "b"}
    assert not folder.exists()
    with (
        pytest.raises(publish.MissingInputError, match="does not exist or is not a folder"),
        publish.local_folder(f"memory://{root}/nowhere", "input"),
    ):
        pass
