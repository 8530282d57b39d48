"""The size rule (tests/sizes.py, run by ``make lint``): the tree keeps it, and an
oversized module or function is reported with what to do."""

from __future__ import annotations

from pathlib import Path

from tests import sizes


def test_the_tree_keeps_the_size_rule() -> None:
    assert sizes.problems() == []


def test_an_oversized_module_and_function_are_reported(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(85))
    (package / "long.py").write_text(f"def long_one() -> None:\n{body}\n" + "\n" * 320)
    (package / "fine.py").write_text("def short() -> int:\n    return 1\n")
    found = sizes.problems(tmp_path, ("pkg",))
    assert [line.split(":")[0] for line in found] == ["pkg/long.py", "pkg/long.py"]
    assert "pkg/long.py: 406 lines (limit 400)" in found[0]
    assert found[1].startswith("pkg/long.py::long_one: 86 lines (limit 80)")
    assert all("EXCEPTIONS" in line for line in found)
