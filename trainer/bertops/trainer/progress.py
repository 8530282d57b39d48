"""Progress reporting of a step: JSON lines on stdout, a progress bar on a terminal.

Every step (prepare, train, evaluate) emits :class:`~bertops.api.steps.ProgressEvent`
lines that the operator's runtimes parse into status (epoch, step, loss, throughput,
ETA). The last stdout line of a step is its :class:`~bertops.api.steps.StepResult`,
printed by :mod:`bertops.trainer.steps`. Only rank 0 of a distributed run reports, so the
stream reads the same for one process or many.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from bertops.api.steps import ProgressEvent


class Progress:
    """Emits progress events; ``enabled=False`` (ranks other than 0) makes it silent."""

    def __init__(
        self, *, enabled: bool = True, stream: IO[str] | None = None, bar: bool | None = None
    ) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stdout
        # A bar only for people: never when stderr is a pipe the operator reads.
        self.bar_enabled = enabled and (sys.stderr.isatty() if bar is None else bar)
        self._bar: Any = None
        self._started = time.monotonic()

    def emit(self, event: str = "progress", **fields: Any) -> None:
        if not self.enabled:
            return
        record = ProgressEvent.model_validate({"event": event, **fields})
        line = json.dumps(record.model_dump(mode="json", by_alias=True, exclude_none=True))
        if self._bar is not None:
            self._bar.clear()
        self.stream.write(line + "\n")
        self.stream.flush()
        if self._bar is not None:
            self._bar.refresh()

    def message(self, text: str, **fields: Any) -> None:
        self.emit("progress", message=text, **fields)

    # --- progress bar (stderr, terminals only) ---------------------------------------
    def bar_start(self, total: int, description: str) -> None:
        if not self.bar_enabled:
            return
        from tqdm import tqdm

        self.bar_close()
        self._bar = tqdm(total=total, desc=description, file=sys.stderr, leave=False)

    def bar_update(self, n: int = 1, **postfix: Any) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)

    def bar_close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def elapsed(self) -> float:
        return time.monotonic() - self._started


def eta_seconds(done: int, total: int, elapsed: float) -> float | None:
    """Seconds left at the average rate so far; None before any work is done."""
    if done <= 0 or elapsed <= 0:
        return None
    return max(0.0, (total - done) * elapsed / done)
