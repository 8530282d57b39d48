"""The ``drift`` step: read the newest ``windowSize`` prediction-log rows of one model and
its reference, compare them with Evidently (:mod:`bertops.server.monitor.report`), decide
(score = share of drifted signals; drifted when score >= threshold) and publish
``report.html`` and ``report.json`` atomically into ``outputUri``.

Called by the trainer's step runner (``bertops trainer drift --spec FILE``). Outcomes:

- fewer than ``minRows`` readable rows (an empty or missing log included): success,
  ``enoughData: false``, no score and no report;
- a log whose every line is unreadable: :class:`MonitorInputError` ``InvalidPredictionLog``;
- a missing, unsealed or corrupt reference: ``ReferenceUnavailable``;
- a report that cannot be published: ``ReportWriteFailed``, permanent (exit 2) when the
  location itself is wrong (a file in the way, read-only, no permission), transient
  (exit 3) otherwise (a full disk, an I/O error), see :mod:`bertops.server.monitor.store`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from bertops.api.artifacts import local_path
from bertops.api.steps import DriftDetails, DriftStep, StepResult
from bertops.modelio import publish
from bertops.server.monitor import (
    REASON_INVALID_PREDICTION_LOG,
    REASON_REPORT_WRITE_FAILED,
    MonitorInputError,
)
from bertops.server.monitor.store import check_output, staged_output

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"

Say = Callable[[str], None]
"""Where progress lines go (the trainer's Progress.message)."""


def read_log(step: DriftStep) -> tuple[list[dict[str, Any]], int]:
    """The window (newest first) and the count of unreadable lines met on the way. A log
    folder in an object store (shipped there by the servers, ``bertops.server.logship``)
    is fetched first; a folder not there yet reads as no rows, like a local one."""
    from bertops.server.predictionlog import read_window

    with contextlib.ExitStack() as stack:
        folder = local_path(step.predictions_uri)
        if folder is None:
            try:
                folder = stack.enter_context(
                    publish.local_folder(step.predictions_uri, "prediction logs")
                )
            except publish.MissingInputError:
                return [], 0
        if folder.exists() and not folder.is_dir():
            raise MonitorInputError(
                f"predictions {step.predictions_uri} is not a folder",
                REASON_INVALID_PREDICTION_LOG,
            )
        rows, skipped = read_window(folder, step.window_size, step.model_name)
    if not rows and skipped:
        raise MonitorInputError(
            f"no line of the prediction log in {step.predictions_uri} is readable "
            f"({skipped} skipped as corrupt: not JSON, missing fields or wrong types)",
            REASON_INVALID_PREDICTION_LOG,
        )
    return rows, skipped


def _uri(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def run_drift(step: DriftStep, say: Say | None = None) -> StepResult:
    """One drift check; see the module docstring for its outcomes."""
    say = say or (lambda _text: None)
    rows, skipped = read_log(step)
    details = DriftDetails(
        enough_data=len(rows) >= step.min_rows,
        threshold=step.threshold,
        method=step.method,
        window_rows=len(rows),
        skipped_rows=skipped,
        model_name=step.model_name,
    )
    metrics = {"windowRows": float(len(rows)), "skippedRows": float(skipped)}
    if not details.enough_data:
        return StepResult(
            kind="drift",
            name=step.name,
            succeeded=True,
            message=f"not enough data: {len(rows)} rows in the window, {step.min_rows} needed",
            metrics=metrics,
            details=details,
        )
    from bertops.server.monitor.reference import load_reference
    from bertops.server.monitor.report import compare

    manifest, reference = load_reference(step.reference_uri)
    check_output(step.output_uri, "the drift report", REASON_REPORT_WRITE_FAILED)
    say(f"drift: {len(rows)} window rows against {len(reference)} reference rows")
    started = time.monotonic()
    comparison = compare(reference, rows, step.method)
    with staged_output(
        step.output_uri, "the drift report", REASON_REPORT_WRITE_FAILED, REPORT_JSON
    ) as staging:
        (staging / REPORT_HTML).write_text(comparison.html, encoding="utf-8")
        (staging / REPORT_JSON).write_text(comparison.json, encoding="utf-8")
    drifted = [signal for signal in comparison.signals if signal.drifted]
    score = len(drifted) / len(comparison.signals) if comparison.signals else 0.0
    details.score = round(score, 6)
    details.drifted = score >= step.threshold
    details.reference_rows = len(reference)
    details.signals = comparison.signals
    details.report_uri = _uri(step.output_uri, REPORT_HTML)
    details.report_json_uri = _uri(step.output_uri, REPORT_JSON)
    details.check_seconds = round(time.monotonic() - started, 3)
    details.model_name = step.model_name or manifest.model_name
    metrics.update(
        driftScore=score,
        drifted=float(details.drifted),
        referenceRows=float(len(reference)),
        checkSeconds=details.check_seconds,
    )
    names = ", ".join(signal.name for signal in drifted) or "none"
    counted = f"{len(drifted)}/{len(comparison.signals)}"
    message = f"drift score {score:.2f} ({counted} signals drifted: {names})"
    if comparison.notes:
        message += "; not compared: " + "; ".join(comparison.notes)
    return StepResult(
        kind="drift",
        name=step.name,
        succeeded=True,
        message=message,
        metrics=metrics,
        artifacts={"report": details.report_uri, "reportJson": details.report_json_uri},
        details=details,
    )
