"""The monitor's storage errors over the shared publication (bertops.modelio.publish): a
missing input is a MonitorInputError with the caller's reason, a failed write is permanent
or transient by its errno, and only errors raised while the input is opened are mapped."""

from __future__ import annotations

import errno
import uuid
from pathlib import Path

import fsspec
import pytest

from bertops.server.monitor import MonitorInputError, MonitorTransientError
from bertops.server.monitor.store import local_input, staged_output


def write_report(uri: str, failure: Exception | None = None) -> None:
    with staged_output(uri, "the report", "R", "report.json") as folder:
        (folder / "report.html").write_text("<html>")
        if failure is not None:
            raise failure
        (folder / "report.json").write_text("{}")


def test_a_missing_input_is_an_input_error_with_the_reason(tmp_path: Path) -> None:
    with (
        pytest.raises(MonitorInputError, match=r"reference .* does not exist") as caught,
        local_input(str(tmp_path / "nowhere"), "reference", "ReferenceUnavailable"),
    ):
        pass
    assert caught.value.reason == "ReferenceUnavailable"


def test_an_error_inside_the_input_block_is_not_remapped(tmp_path: Path) -> None:
    with pytest.raises(KeyError), local_input(str(tmp_path), "reference", "R"):
        raise KeyError("a caller's own error")


def test_a_file_in_the_outputs_place_is_permanent(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("keep me")
    with pytest.raises(MonitorInputError, match="cannot write the report") as caught:
        write_report(str(tmp_path / "out"))
    assert caught.value.reason == "R"
    assert (tmp_path / "out").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_full_disk_while_filling_is_transient(tmp_path: Path) -> None:
    with pytest.raises(MonitorTransientError, match="No space left") as caught:
        write_report(str(tmp_path / "out"), OSError(errno.ENOSPC, "No space left on device"))
    assert caught.value.reason == "R"
    assert list(tmp_path.iterdir()) == []


def test_a_remote_output_is_published_with_its_last_file() -> None:
    fs = fsspec.filesystem("memory")
    root = f"/monitor-{uuid.uuid4().hex[:8]}"
    try:
        write_report(f"memory://{root}/out")
        assert sorted(fs.find(root)) == [f"{root}/out/report.html", f"{root}/out/report.json"]
        with local_input(f"memory://{root}/out", "report", "R") as copy:
            assert (copy / "report.json").read_text() == "{}"
    finally:
        if fs.exists(root):
            fs.rm(root, recursive=True)
