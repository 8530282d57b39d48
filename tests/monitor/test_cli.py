"""``bertops trainer drift|reference --spec FILE``: the commands exist, run the step, print
the result as the last stdout line, write the result document and exit with its code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertops.api.steps import DriftDetails, StepResult
from bertops.trainer.cli import app
from tests.monitor.builders import drift_spec, rows, write_log, write_reference


def test_drift_command(tmp_path: Path) -> None:
    write_reference(tmp_path / "reference", rows(120, seed=1))
    write_log(tmp_path / "predictions", rows(60, seed=2))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(drift_spec(tmp_path)))
    outcome = CliRunner().invoke(app, ["drift", "--spec", str(spec)])
    assert outcome.exit_code == 0, outcome.output
    printed = StepResult.model_validate_json(outcome.output.strip().splitlines()[-1])
    written = StepResult.model_validate_json((tmp_path / "result.json").read_text())
    assert printed.kind == written.kind == "drift"
    assert written.details == printed.details
    assert (tmp_path / "report" / "report.html").is_file()


def test_drift_command_exit_code_of_a_bad_log(tmp_path: Path) -> None:
    (tmp_path / "predictions").mkdir()
    (tmp_path / "predictions" / "a.jsonl").write_text("garbage\n")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({k: v for k, v in drift_spec(tmp_path).items() if k != "kind"}))
    outcome = CliRunner().invoke(app, ["drift", "--spec", str(spec)])
    assert outcome.exit_code == 2, outcome.output
    written = StepResult.model_validate_json((tmp_path / "result.json").read_text())
    assert (written.kind, written.reason) == ("drift", "InvalidPredictionLog")


def test_reference_spec_given_to_drift_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"kind": "reference", "name": "x"}))
    outcome = CliRunner().invoke(app, ["drift", "--spec", str(spec)])
    assert outcome.exit_code == 2
    assert "given to `drift`" in outcome.output


@pytest.mark.slow
def test_drift_as_a_process(tmp_path: Path) -> None:
    """What a runtime starts: a fresh process, the spec on stdin."""
    write_reference(tmp_path / "reference", rows(120, seed=1))
    write_log(tmp_path / "predictions", rows(60, seed=2, shift=1.5))
    done = subprocess.run(
        [sys.executable, "-m", "bertops.trainer.cli", "drift", "--spec", "-"],
        input=json.dumps(drift_spec(tmp_path)),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = StepResult.model_validate_json(done.stdout.strip().splitlines()[-1])
    assert result.details is not None
    assert isinstance(result.details, DriftDetails)
    assert result.details.drifted is True
    assert (tmp_path / "result.json").is_file()
