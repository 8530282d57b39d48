"""Stopping things in stages that each run even when an earlier one failed: ``bertops
cluster down`` (:meth:`bertops.cluster.controlplane.cluster.Cluster.down`) and the node's
own teardown (:meth:`bertops.cluster.node.node.Node.down`). A teardown that stops at its
first error leaves everything after it running (network namespace, kubelet, containerd,
mounts), so each stage's failure is recorded, the next stage runs, and :meth:`finish`
raises one :class:`DownError` naming every failure once all have run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


class DownError(RuntimeError):
    """One or more stages of a teardown failed; every other stage still ran."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = list(failures)
        listed = "; ".join(self.failures)
        super().__init__(
            f"{len(self.failures)} stage(s) of down failed (the others ran): {listed}. "
            "Run down again once the cause is fixed; it skips what is already stopped."
        )


@dataclass
class Teardown:
    """Runs stages in order and collects their failures instead of stopping at one."""

    failures: list[str] = field(default_factory=list)

    def run(self, stage: str, action: Callable[[], T]) -> T | None:
        """Run one stage; what it returned, or None when it failed."""
        try:
            return action()
        except DownError as nested:  # a teardown inside this one: keep each failure
            self.failures.extend(f"{stage}: {failure}" for failure in nested.failures)
        except Exception as error:  # every stage runs; finish() reports this one
            self.failures.append(f"{stage}: {type(error).__name__}: {error}")
        return None

    def finish(self) -> None:
        """Raise :class:`DownError` when any stage failed."""
        if self.failures:
            raise DownError(self.failures)
