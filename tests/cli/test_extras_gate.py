"""`bertops <component>` without that component's extra says which extra to install and
exits 2, instead of a ModuleNotFoundError traceback: the wheel always ships every
component's code, so only the extras' libraries tell what can run. A missing library is
simulated with ``sys.modules[name] = None``, which makes ``find_spec`` report it absent
(the real torch-free install is tests/cluster/test_torch_free_install.py)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bertops.cli import extras

ROOT = Path(__file__).resolve().parents[2]


def bertops_without(blocked: str, *args: str) -> subprocess.CompletedProcess[str]:
    code = (
        f"import sys; sys.modules[{blocked!r}] = None; sys.argv = ['bertops', *{list(args)!r}]; "
        "from bertops.cli.main import main; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )


@pytest.mark.parametrize(
    ("blocked", "args", "extra"),
    [
        ("torch", ["trainer", "prepare", "--help"], "trainer"),
        ("transformers", ["trainer", "train", "--spec", "x.json"], "trainer"),
        ("uvicorn", ["server", "serve", "--model", "m"], "server"),
        ("kopf", ["operator", "--runtime", "local"], "operator"),
        ("cryptography", ["cluster", "up"], "operator"),
        ("torch", ["demo"], "trainer"),
    ],
)
def test_missing_extra_gives_the_install_hint(blocked: str, args: list[str], extra: str) -> None:
    result = bertops_without(blocked, *args)
    assert result.returncode == 2, result.stderr
    assert re.search(rf"pip install 'bertops\[[a-z,]*{extra}[a-z,]*\]'", result.stderr)
    assert f"missing here: {blocked}" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_an_uninstalled_component_with_its_extra() -> None:
    result = bertops_without("torch", "--help")
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"trainer\s+\(not installed here: pip install 'bertops\[trainer\]'\)", result.stdout
    )


def test_installed_component_is_mounted() -> None:
    result = bertops_without("not_a_real_module", "trainer", "--help")
    assert result.returncode == 0, result.stderr
    assert "prepare" in result.stdout


def test_compression_needs_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    assert extras.compression_available()  # the dev install has everything
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert not extras.compression_available()


def _module_name(requirement: str) -> str:
    name = re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower()
    aliases = {"scikit-learn": "sklearn", "pyyaml": "yaml"}
    return aliases.get(name, name.replace("-", "_"))


def test_extras_modules_match_pyproject() -> None:
    """extras.MODULES is hand-kept beside pyproject.toml; this keeps the two in step."""
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra, modules in extras.MODULES.items():
        assert sorted(modules) == sorted(_module_name(r) for r in optional[extra]), extra


def test_cluster_status_works_in_a_core_install(tmp_path: Path) -> None:
    """Only `cluster up` needs cryptography (certificates); status/down/env do not."""
    code = (
        "import os, sys; sys.modules['cryptography'] = None; "
        f"os.environ['BERTOPS_HOME'] = {str(tmp_path)!r}; "
        "sys.argv = ['bertops', 'cluster', 'status', '--name', 'absent']; "
        "from bertops.cli.main import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 1, result.stderr  # not running: 1, and no traceback
    assert '"running": false' in result.stdout
