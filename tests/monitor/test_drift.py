"""The drift step end to end through the trainer's step runner, with Evidently running for
real on synthetic prediction-log rows: the decision, the report, and every failure's exit
code, reason and message (with no half-written report left behind)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from bertops.api.steps import DriftDetails, StepResult
from bertops.modelio import publish
from bertops.server.monitor import report as report_module
from bertops.trainer.steps import run_step
from tests.monitor.builders import drift_spec, rows, write_log, write_reference

SIGNALS = {"embeddings", "chars", "tokens", "unkRate", "nonAscii", "label"}


def details(result: StepResult) -> DriftDetails:
    assert isinstance(result.details, DriftDetails)
    return result.details


def leftovers(folder: Path) -> list[str]:
    """Staging or moved-aside folders a publication could leave next to its target."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    return write_reference(tmp_path / "reference", rows(300, seed=1))


def test_same_distribution_is_no_drift(tmp_path: Path, reference: Path) -> None:
    write_log(tmp_path / "predictions", rows(150, seed=2))
    result = run_step(drift_spec(tmp_path))
    assert result.succeeded, result.message
    found = details(result)
    assert found.enough_data is True
    assert found.drifted is False
    assert found.window_rows == 150
    assert found.reference_rows == 300
    assert {s.name for s in found.signals or []} == SIGNALS
    assert found.score is not None
    assert found.score < 0.3
    assert found.check_seconds is not None
    assert found.check_seconds > 0
    html, document = tmp_path / "report" / "report.html", tmp_path / "report" / "report.json"
    assert found.report_uri == str(html)
    assert found.report_json_uri == str(document)
    assert "<html" in html.read_text()[:2000].lower()
    assert len(json.loads(document.read_text())["metrics"]) == len(SIGNALS)
    written = StepResult.model_validate_json((tmp_path / "result.json").read_text())
    assert written.details == found
    assert leftovers(tmp_path) == []


def test_shifted_world_is_drift(tmp_path: Path, reference: Path) -> None:
    write_log(tmp_path / "predictions", rows(150, seed=2, shift=1.0))
    result = run_step(drift_spec(tmp_path))
    assert result.succeeded, result.message
    found = details(result)
    signals = {s.name: s for s in found.signals or []}
    assert signals["embeddings"].drifted is True
    assert signals["embeddings"].method == "model"
    assert signals["chars"].drifted is True
    assert found.drifted is True
    assert found.score is not None and found.threshold is not None
    assert found.score >= found.threshold
    assert result.metrics["driftScore"] == pytest.approx(found.score, abs=1e-6)
    assert "embeddings" in result.message


def test_only_the_named_models_rows_count(tmp_path: Path, reference: Path) -> None:
    write_log(tmp_path / "predictions", rows(150, seed=2))
    write_log(tmp_path / "predictions", rows(150, seed=3, shift=2.0, model="other"), "b.jsonl")
    found = details(run_step(drift_spec(tmp_path)))
    assert found.window_rows == 150
    assert found.drifted is False


def test_window_without_embeddings_compares_the_rest(tmp_path: Path, reference: Path) -> None:
    write_log(tmp_path / "predictions", rows(150, seed=2, embeddings=False))
    result = run_step(drift_spec(tmp_path))
    assert result.succeeded, result.message
    assert {s.name for s in details(result).signals or []} == SIGNALS - {"embeddings"}
    assert "not compared: embeddings" in result.message


@pytest.mark.parametrize("method", ["mmd", "ratio", "distance"])
def test_every_method_maps_to_evidently(method: str) -> None:
    chosen = report_module.embedding_method(method)
    assert type(chosen).__name__.lower().startswith(method)
    assert chosen.threshold > 0


def test_not_enough_data(tmp_path: Path) -> None:
    write_log(tmp_path / "predictions", rows(10, seed=2))
    result = run_step(drift_spec(tmp_path))  # no reference needed: nothing to compare
    assert result.succeeded, result.message
    found = details(result)
    assert (found.enough_data, found.window_rows, found.score, found.drifted) == (
        False,
        10,
        None,
        None,
    )
    assert "not enough data" in result.message
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("create", [True, False])
def test_empty_or_missing_log_is_not_enough_data(tmp_path: Path, create: bool) -> None:
    if create:
        (tmp_path / "predictions").mkdir()
        (tmp_path / "predictions" / "server-0.jsonl").touch()
    found = details(run_step(drift_spec(tmp_path)))
    assert (found.enough_data, found.window_rows, found.skipped_rows) == (False, 0, 0)


def test_corrupt_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = write_log(tmp_path / "predictions", rows(20, seed=2))
    with path.open("a") as handle:
        handle.write('{"broken": \n\x00\x01garbage\n{"time": 3}\n')
    found = details(run_step(drift_spec(tmp_path)))
    assert (found.window_rows, found.skipped_rows) == (20, 3)


def test_unreadable_log(tmp_path: Path) -> None:
    (tmp_path / "predictions").mkdir()
    (tmp_path / "predictions" / "server-0.jsonl").write_text("not json\n{}\n[1, 2]\n")
    result = run_step(drift_spec(tmp_path))
    assert (result.succeeded, result.exit_code, result.reason) == (
        False,
        2,
        "InvalidPredictionLog",
    )
    assert "no line of the prediction log" in result.message
    assert "3 skipped" in result.message
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("damage", ["missing", "unsealed", "tampered", "bad manifest"])
def test_reference_unavailable(tmp_path: Path, damage: str) -> None:
    write_log(tmp_path / "predictions", rows(100, seed=2))
    if damage != "missing":
        folder = write_reference(tmp_path / "reference", rows(100, seed=1))
        if damage == "unsealed":
            (folder / "bertops-reference.json").unlink()
        elif damage == "tampered":
            lines = folder / "reference.jsonl"
            lines.write_text(lines.read_text().replace('"negative"', '"positive"'))
        else:
            (folder / "bertops-reference.json").write_text('{"rows": "many"}')
    result = run_step(drift_spec(tmp_path))
    assert (result.exit_code, result.reason) == (2, "ReferenceUnavailable"), result.message
    assert "reference" in result.message
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("where", ["output is a file", "parent is a file"])
def test_report_location_unusable(tmp_path: Path, reference: Path, where: str) -> None:
    write_log(tmp_path / "predictions", rows(100, seed=2))
    (tmp_path / "blocker").write_text("keep me")
    output = tmp_path / "blocker" if where == "output is a file" else tmp_path / "blocker" / "r"
    result = run_step(drift_spec(tmp_path, outputUri=str(output)))
    assert (result.exit_code, result.reason) == (2, "ReportWriteFailed"), result.message
    assert "cannot write the drift report" in result.message
    assert (tmp_path / "blocker").read_text() == "keep me"
    assert leftovers(tmp_path) == []


def test_failed_publication_keeps_the_previous_report(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_log(tmp_path / "predictions", rows(100, seed=2))
    previous = tmp_path / "report"
    previous.mkdir()
    (previous / "report.json").write_text('{"previous": true}')
    monkeypatch.setattr(
        report_module,
        "compare",
        lambda *_: report_module.Comparison(signals=[], html="<html>", json="{}"),
    )

    def full_disk(staging: Path, target: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(publish, "publish_local", full_disk)
    result = run_step(drift_spec(tmp_path))
    # A full disk may be freed: worth a retry, unlike a file in the report's place.
    assert (result.exit_code, result.reason) == (3, "ReportWriteFailed"), result.message
    assert "No space left on device" in result.message
    assert (previous / "report.json").read_text() == '{"previous": true}'
    assert leftovers(tmp_path) == []
