"""Which failures a retry can help (bertops.trainer.errors.classify), table-driven: what a
runtime reads from a step's exit code (2 bad input, 3 transient, 1 a bug)."""

from __future__ import annotations

import errno

import pytest
from botocore.exceptions import EndpointConnectionError

from bertops.api.steps import ExitCode
from bertops.trainer.errors import BadInputError, TransientError, classify


def _wrapped(inner: BaseException) -> BaseException:
    """An error as pandas or fsspec raise it: another type, the real one as its cause."""
    try:
        raise inner
    except BaseException as cause:
        outer = OSError("read failed")
        outer.__cause__ = cause
        return outer


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (BadInputError("no such column"), ExitCode.BAD_INPUT),
        (TransientError("peer lost"), ExitCode.TRANSIENT),
        (FileNotFoundError("s3://b/x: The specified bucket does not exist."), ExitCode.BAD_INPUT),
        (PermissionError("cannot publish to s3://b/p: Access Denied."), ExitCode.BAD_INPUT),
        (PermissionError(errno.EACCES, "Permission denied", "/artifacts/x"), ExitCode.BAD_INPUT),
        (ConnectionResetError("reset"), ExitCode.TRANSIENT),
        (OSError(errno.EIO, "I/O error"), ExitCode.TRANSIENT),
        (_wrapped(EndpointConnectionError(endpoint_url="http://s3")), ExitCode.TRANSIENT),
        (RuntimeError("[../gloo/transport] Connection closed by peer"), ExitCode.TRANSIENT),
        (MemoryError(), ExitCode.TRANSIENT),
        (ValueError("a bug"), ExitCode.UNEXPECTED),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_classify(error: BaseException, expected: ExitCode) -> None:
    assert classify(error)[0] == expected
