"""The drift monitor: the ``reference`` step (run a model over a sample of its dataset and
keep what production traffic is compared with) and the ``drift`` step (compare the newest
prediction-log rows with that reference using Evidently, write the report).

Both run as ``bertops trainer reference|drift --spec FILE``: the trainer's step runner
(``bertops.trainer.steps``) dispatches to :func:`bertops.server.monitor.reference.run_reference`
and :func:`bertops.server.monitor.drift.run_drift` and maps :class:`MonitorError` to exit
codes (the server never imports the trainer). Importing this package is cheap: pandas,
torch and Evidently are imported by the submodules that need them.
"""

from __future__ import annotations

REASON_INVALID_INPUT = "InvalidInput"
REASON_INVALID_PREDICTION_LOG = "InvalidPredictionLog"
REASON_REFERENCE_UNAVAILABLE = "ReferenceUnavailable"
REASON_REPORT_WRITE_FAILED = "ReportWriteFailed"
REASON_REFERENCE_WRITE_FAILED = "ReferenceWriteFailed"


class MonitorError(Exception):
    """A failure the monitor reports on purpose; ``reason`` is a CamelCase condition reason
    and ``transient`` says whether a retry may help (exit 3) or not (exit 2)."""

    transient = False

    def __init__(self, message: str, reason: str = REASON_INVALID_INPUT) -> None:
        super().__init__(message)
        self.reason = reason


class MonitorInputError(MonitorError, ValueError):
    """Retrying cannot help: a missing or corrupt input, an unwritable output location."""


class MonitorTransientError(MonitorError):
    """Retrying may help: e.g. a full disk or a storage hiccup while writing a report."""

    transient = True


__all__ = [
    "REASON_INVALID_INPUT",
    "REASON_INVALID_PREDICTION_LOG",
    "REASON_REFERENCE_UNAVAILABLE",
    "REASON_REFERENCE_WRITE_FAILED",
    "REASON_REPORT_WRITE_FAILED",
    "MonitorError",
    "MonitorInputError",
    "MonitorTransientError",
]
