"""Waiting in tests, in one place: :func:`wait_for` polls a predicate until it returns
something truthy and fails saying what it waited for (the last value, and a log tail when
one is given); :func:`wait_reason` waits for an object's condition to take a reason.

Every integration and node test waits through these (a test asserts on what it waited
for, so a timeout says what never happened).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 60,
    interval: float = 0.25,
    what: str = "condition",
    log: Callable[[], str] | Path | None = None,
) -> Any:
    """Poll until ``predicate`` returns something truthy and return it; on timeout an
    AssertionError names ``what``, the last value and the tail of ``log`` (a file, or a
    function returning text)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    message = f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"
    if isinstance(log, Path):
        message += "\n" + (log.read_text(errors="replace")[-3000:] if log.exists() else "")
    elif log is not None:
        message += "\n" + log()
    raise AssertionError(message)


def condition_of(body: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    """The condition of that type in an object's status, or None."""
    for found in ((body or {}).get("status") or {}).get("conditions") or []:
        if found["type"] == type_:
            return dict(found)
    return None


def wait_reason(
    kube: Any,
    namespace: str,
    name: str,
    reason: str,
    kind: str = "BertDataset",
    type_: str = "Ready",
    timeout: float = 60,
) -> dict[str, Any]:
    """Wait until the object's ``type_`` condition has ``reason``; that condition."""
    found: dict[str, Any] = wait_for(
        lambda: (
            (seen := condition_of(kube.get(kind, namespace, name), type_))
            and seen["reason"] == reason
            and seen
        ),
        timeout=timeout,
        what=f"{kind} {name} {type_} reason {reason}",
    )
    return found
