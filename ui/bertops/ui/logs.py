"""Where a training's step logs are and how to read them incrementally: the local
runtime's step folder (``<state>/steps/<namespace>/<step>/stdout.log`` and
``stderr.log``, see :mod:`bertops.operator.runtime.local`) or, with the kubernetes
runtime, the logs of the step's pods (label ``bertops.io/step``).

Used by ``bertops trainings logs [--follow]`` (:mod:`bertops.cli.runs`). A step's
stdout is JSON progress lines (:class:`bertops.api.steps.ProgressEvent`); :func:`render`
turns each into one readable line and leaves any other line as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertops.operator.config import OperatorConfig
from bertops.ui.catalog import Catalog, CatalogError

STREAMS = ("stdout.log", "stderr.log")
MAX_READ = 1 << 20  # per poll and file: a runaway log cannot exhaust memory


def default_state_dir() -> Path:
    """The local runtime's state folder, as the operator computes it (BERTOPS_HOME)."""
    return OperatorConfig().state_dir


def render(line: str) -> str:
    """A progress JSON line as ``[event] epoch e/E step s/S loss x message``."""
    try:
        data = json.loads(line)
    except ValueError:
        return line
    if not isinstance(data, dict) or "event" not in data:
        return line
    parts = [f"[{data['event']}]"]
    if data.get("epoch") is not None:
        parts.append(f"epoch {data['epoch']}/{data.get('totalEpochs', '?')}")
    if data.get("step") is not None:
        parts.append(f"step {data['step']}/{data.get('totalSteps', '?')}")
    if isinstance(data.get("loss"), int | float):
        parts.append(f"loss {data['loss']:.4f}")
    if isinstance(data.get("validation"), dict):
        shown = {k: v for k, v in data["validation"].items() if isinstance(v, int | float)}
        parts.append(" ".join(f"val {k} {v:.4f}" for k, v in shown.items()))
    if data.get("message"):
        parts.append(str(data["message"]))
    return " ".join(parts)


@dataclass
class LogReader:
    """New log text of one step since the last :meth:`read` (files by byte offset, pods
    by length of what was already returned)."""

    catalog: Catalog
    state_dir: Path
    step: str
    _offsets: dict[str, int] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.state_dir / "steps" / self.catalog.namespace / self.step

    def where(self) -> str:
        if self.folder.is_dir():
            return str(self.folder)
        return f"pods with {self.step!r} (kubernetes runtime)"

    def read(self) -> list[str]:
        if self.folder.is_dir():
            return self._read_files()
        return self._read_pods()

    def _read_files(self) -> list[str]:
        lines: list[str] = []
        for stream in STREAMS:
            path = self.folder / stream
            if not path.is_file():
                continue
            start = self._offsets.get(stream, 0)
            with path.open("rb") as handle:
                handle.seek(start)
                chunk = handle.read(MAX_READ)
            # Only whole lines: a line being written is read on the next poll.
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._offsets[stream] = start + len(complete)
            text = complete.decode("utf-8", "replace")
            prefix = "" if stream == "stdout.log" else "stderr: "
            lines += [prefix + render(line) for line in text.splitlines() if line.strip()]
        return lines

    def _read_pods(self) -> list[str]:
        lines: list[str] = []
        try:
            pods = self.catalog.step_pods(self.step)
        except CatalogError:
            return lines
        for pod in pods:
            try:
                text = self.catalog.pod_log(pod)
            except CatalogError:  # not started yet, or already gone
                continue
            seen = self._offsets.get(pod, 0)
            new = text[seen:]
            complete = new[: new.rfind("\n") + 1]
            self._offsets[pod] = seen + len(complete)
            prefix = f"{pod}: " if len(pods) > 1 else ""
            lines += [prefix + render(line) for line in complete.splitlines() if line.strip()]
        return lines


def progress_line(progress: dict[str, Any]) -> str:
    """``epoch 2/3 · step 40/60 · loss 0.4100 · eta 12s`` from status.progress."""
    parts = []
    if progress.get("totalEpochs"):
        parts.append(f"epoch {progress.get('epoch', 0)}/{progress['totalEpochs']}")
    if progress.get("totalSteps"):
        parts.append(f"step {progress.get('step', 0)}/{progress['totalSteps']}")
    if isinstance(progress.get("loss"), int | float):
        parts.append(f"loss {progress['loss']:.4f}")
    if isinstance(progress.get("etaSeconds"), int | float):
        parts.append(f"eta {progress['etaSeconds']:.0f}s")
    return " · ".join(parts) or "no progress reported yet"
