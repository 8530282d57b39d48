"""The operator install is really torch-free and still works: a fresh venv gets
``bertops[operator]`` alone (from this checkout, with the pinned constraints), then the
CLI, the extras message of an uninstalled component and the operator's pure unit tests
run inside it. Needs PyPI (or pip's cache); about 1-3 minutes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=timeout
    )


@pytest.mark.timeout(420)
def test_operator_extra_alone_installs_and_runs_without_torch(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    # Nothing of the developer's environment leaks in: not its venv, not a PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"

    install = run(
        [
            str(bin_dir / "pip"),
            "install",
            "--progress-bar",
            "off",
            "-c",
            "constraints.txt",
            f"{ROOT}[operator]",
            "pytest",
            "pytest-timeout",
            "pytest-asyncio",
        ],
        env,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    torch = run([str(bin_dir / "python"), "-c", "import torch"], env, timeout=60)
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr

    help_ = run([str(bin_dir / "bertops"), "--help"], env, timeout=60)
    assert help_.returncode == 0, help_.stderr
    assert "operator" in help_.stdout

    prepare = run([str(bin_dir / "bertops"), "trainer", "prepare", "--help"], env, timeout=60)
    assert prepare.returncode == 2, prepare.stdout + prepare.stderr
    assert "pip install 'bertops[trainer]'" in prepare.stderr
    assert "Traceback" not in prepare.stderr

    unit = run(
        [
            str(bin_dir / "python"),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "not integration and not slow",
            "tests/operator/test_planners.py",
            "tests/operator/test_rollout_gates.py",  # the judgment's statistics: no torch
            "tests/api",
        ],
        env,
        timeout=300,
    )
    assert unit.returncode == 0, unit.stdout[-4000:] + unit.stderr[-2000:]
    assert " passed" in unit.stdout
