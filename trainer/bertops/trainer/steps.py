"""Run one step from its spec: parse, dispatch to prepare/train/evaluate/compress/challenge
or the drift monitor's reference/drift (implemented in ``bertops.server.monitor``), turn
failures into a result with the right exit code, and write the result document last.

The Python API (:func:`run_step`, re-exported as ``bertops.trainer.run_step``) and the CLI
(:mod:`bertops.trainer.cli`) both go through here, so a step behaves the same in a test,
a local process or a Kubernetes Job.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from bertops.api.steps import (
    STEP_KINDS,
    ChallengeStep,
    CompressStep,
    DriftStep,
    EvaluateStep,
    ExitCode,
    PrepareStep,
    ReferenceStep,
    StepBase,
    StepResult,
    StepSpec,
    TrainStep,
)
from bertops.trainer import artifacts_io
from bertops.trainer.distributed import env_rank
from bertops.trainer.errors import (
    REASON_INVALID_INPUT,
    BadInputError,
    StepError,
    TransientError,
    classify,
)
from bertops.trainer.progress import Progress

_SPEC = TypeAdapter(Annotated[StepSpec, Field(discriminator="kind")])
KINDS = STEP_KINDS


def parse_spec(data: str | bytes | dict[str, Any] | StepSpec) -> StepSpec:
    """A step spec from JSON text, a dict or a model; BadInputError with the pydantic errors."""
    if isinstance(data, StepBase):  # already a parsed spec of some kind
        return data
    try:
        if isinstance(data, str | bytes):
            return _SPEC.validate_json(data)
        return _SPEC.validate_python(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in error.errors()[:8]
        )
        raise BadInputError(f"invalid step spec: {problems}") from error


def _dispatch(spec: StepSpec, progress: Progress) -> StepResult:
    if isinstance(spec, PrepareStep):
        from bertops.trainer.prepare import run_prepare

        return run_prepare(spec, progress)
    if isinstance(spec, TrainStep):
        from bertops.trainer.train import run_train

        return run_train(spec, progress)
    if isinstance(spec, EvaluateStep):
        from bertops.trainer.evaluate import run_evaluate

        return run_evaluate(spec, progress)
    if isinstance(spec, CompressStep):
        from bertops.trainer.compress import run_compress

        return run_compress(spec, progress)
    if isinstance(spec, ChallengeStep):
        from bertops.trainer.challenge import run_challenge

        return run_challenge(spec, progress)
    if isinstance(spec, ReferenceStep | DriftStep):
        return _monitor(spec, progress)
    raise BadInputError(f"step kind {spec.kind} is not implemented by this trainer version")


def _monitor(spec: ReferenceStep | DriftStep, progress: Progress) -> StepResult:
    """The drift monitor's steps live in the server package, which may not import the
    trainer: its own errors become the trainer's, keeping their reasons."""
    from bertops.server.monitor import MonitorError

    try:
        if isinstance(spec, ReferenceStep):
            from bertops.server.monitor.reference import run_reference

            return run_reference(spec, progress.message)
        from bertops.server.monitor.drift import run_drift

        return run_drift(spec, progress.message)
    except MonitorError as error:
        kind: type[StepError] = TransientError if error.transient else BadInputError
        raise kind(str(error), reason=error.reason) from error


def run_step(
    spec: str | bytes | dict[str, Any] | StepSpec, progress: Progress | None = None
) -> StepResult:
    """Run a step and return its result; never raises for step failures.

    The result document is written to ``spec.resultUri`` (by rank 0) after everything
    else, so its presence means the step has finished.
    """
    started_at = datetime.now(UTC)
    started = time.monotonic()
    rank = env_rank()
    progress = progress or Progress(enabled=rank == 0)
    parsed: StepSpec | None = None
    try:
        parsed = parse_spec(spec)
        result = _dispatch(parsed, progress)
    except Exception as error:
        progress.bar_close()
        code, reason = classify(error)
        if code == ExitCode.UNEXPECTED:
            traceback.print_exc(file=sys.stderr)
        kind = parsed.kind if parsed is not None else _guess_kind(spec)
        name = parsed.name if parsed is not None else "unknown"
        message = str(error) or type(error).__name__
        if code != ExitCode.BAD_INPUT and not isinstance(error, BadInputError):
            message = f"{type(error).__name__}: {message}"
        result = StepResult(
            kind=kind,
            name=name,
            succeeded=False,
            exit_code=int(code),
            reason=reason,
            message=message,
        )
        progress.emit("error", message=message)
    result.started_at = started_at
    result.finished_at = datetime.now(UTC)
    result.duration_seconds = round(time.monotonic() - started, 3)
    if parsed is not None and parsed.result_uri and rank == 0:
        try:
            artifacts_io.write_text(parsed.result_uri, result_json(result) + "\n")
        except OSError as error:
            # The step's work is done; losing the result file is worth a retry.
            result.succeeded = False
            result.exit_code = int(ExitCode.TRANSIENT)
            result.message = f"could not write result to {parsed.result_uri}: {error}"
    termination_log = os.environ.get("BERTOPS_TERMINATION_LOG")
    if termination_log and rank == 0:
        # On Kubernetes the operator reads the result from the container's termination
        # message (set by the Job the kubernetes runtime builds).
        try:
            Path(termination_log).write_text(result.compact_json())
        except OSError as error:
            print(f"could not write the termination message: {error}", file=sys.stderr)
    return result


def _guess_kind(spec: object) -> Any:
    kind = None
    if isinstance(spec, dict):
        kind = spec.get("kind")
    elif isinstance(spec, str | bytes):
        try:
            loaded = json.loads(spec)
            kind = loaded.get("kind") if isinstance(loaded, dict) else None
        except ValueError:
            kind = None
    return kind if kind in KINDS else "prepare"


def result_json(result: StepResult) -> str:
    return json.dumps(
        result.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":")
    )


def failed(kind: str, message: str, name: str = "unknown") -> StepResult:
    """A bad-input result for failures before a spec could be read (CLI)."""
    return StepResult(
        kind=kind if kind in KINDS else "prepare",
        name=name,
        succeeded=False,
        exit_code=int(ExitCode.BAD_INPUT),
        reason=REASON_INVALID_INPUT,
        message=message,
    )
