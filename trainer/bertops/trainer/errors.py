"""Failure classes of a trainer step and how they map to exit codes and reasons.

Raised anywhere inside prepare/train/evaluate (the drift monitor's own errors are
mapped onto these by :mod:`bertops.trainer.steps`); :mod:`bertops.trainer.steps` turns them
into a failed :class:`~bertops.api.steps.StepResult` with the matching
:class:`~bertops.api.steps.ExitCode`, so a runtime knows whether a retry can help.
"""

from __future__ import annotations

from bertops.api import reasons
from bertops.api.artifacts import ArtifactError
from bertops.api.steps import ExitCode

REASON_INVALID_INPUT = "InvalidInput"  # permanent: bad data, bad spec, missing file
REASON_TRANSIENT = "TransientError"  # retry may help: storage, lost peer, OOM
REASON_STEP_FAILED = reasons.REASON_STEP_FAILED  # a bug


class StepError(Exception):
    """Base of the failures a step reports on purpose (message is for a person)."""

    exit_code: ExitCode = ExitCode.UNEXPECTED
    reason: str = REASON_STEP_FAILED

    def __init__(self, message: str = "", *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:  # a more specific reason, e.g. the drift monitor's
            self.reason = reason


class BadInputError(StepError):
    """Retrying cannot help: the data, the spec or a referenced artifact is wrong."""

    exit_code = ExitCode.BAD_INPUT
    reason = REASON_INVALID_INPUT


class TransientError(StepError):
    """Retrying may help: storage hiccup, a peer rank lost, out of memory."""

    exit_code = ExitCode.TRANSIENT
    reason = REASON_TRANSIENT


def classify(error: BaseException) -> tuple[ExitCode, str]:
    """Exit code and reason for any exception, including ones we did not raise."""
    if isinstance(error, StepError):
        return error.exit_code, error.reason
    if isinstance(error, ArtifactError):
        # A refused or unloadable artifact (bertops.api.artifacts, bertops.modelio):
        # the same bytes fail the same way on a retry.
        return ExitCode.BAD_INPUT, REASON_INVALID_INPUT
    if isinstance(error, FileNotFoundError | NotADirectoryError | IsADirectoryError):
        # Inputs are checked up front; a missing path here is still the caller's input.
        return ExitCode.BAD_INPUT, REASON_INVALID_INPUT
    if isinstance(error, PermissionError):
        # Refused by a file's mode or an object store's key or policy (s3fs raises it for
        # 403): the same identity is refused the same way on a retry.
        return ExitCode.BAD_INPUT, REASON_INVALID_INPUT
    if isinstance(error, ConnectionError | TimeoutError | MemoryError):
        return ExitCode.TRANSIENT, REASON_TRANSIENT
    if _object_store_unreachable(error):
        return ExitCode.TRANSIENT, REASON_TRANSIENT
    text = str(error).lower()
    # torch reports a lost gloo/nccl peer or CUDA OOM as RuntimeError subclasses whose
    # types are not importable without torch; their messages are stable enough.
    if isinstance(error, RuntimeError) and any(
        marker in text
        for marker in (
            "out of memory",
            "connection closed",
            "connection reset",
            "timed out",
            "broken pipe",
            "nccl",
            "gloo",
        )
    ):
        return ExitCode.TRANSIENT, REASON_TRANSIENT
    if isinstance(error, OSError):
        return ExitCode.TRANSIENT, REASON_TRANSIENT
    return ExitCode.UNEXPECTED, REASON_STEP_FAILED


def _object_store_unreachable(error: BaseException) -> bool:
    """botocore's connection and timeout errors (s3fs), which are not Python's
    ConnectionError, anywhere in the chain of causes (pandas and fsspec wrap them)."""
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError
    except ImportError:  # no S3 driver installed: no S3 error either
        return False
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, BotoConnectionError | HTTPClientError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
