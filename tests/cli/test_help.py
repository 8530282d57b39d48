"""`bertops --help` and its sub-commands' help read as a person expects: every command
listed, and no type placeholder beside flags (typer 0.29 printed ``<bool>`` beside
``--help`` and every boolean flag; constraints.txt pins the typer that does not)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bertops.cli.main import app


@pytest.mark.parametrize(
    "args", [["--help"], ["server", "gateway", "--help"], ["operator", "--help"]]
)
def test_help_has_no_type_placeholders_beside_flags(args: list[str]) -> None:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "--help" in result.output


def test_the_top_level_help_lists_every_command() -> None:
    output = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"}).output
    for command in ("demo", "cluster", "operator", "server", "trainer", "rollout", "ui"):
        assert f" {command} " in output, command
