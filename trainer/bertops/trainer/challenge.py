"""The ``challenge`` step: champion/challenger before any traffic moves. The stable model
and a candidate (e.g. a retrained model) predict the same frozen rows, and every row is
counted by which of the two got it right.

Two frozen sets, neither of which new feedback ever enters: the test split of the
stable model's prepared dataset (``testUri``) and the feedback held back from the
candidate's dataset by time (``holdoutUri``, the holdout file the prepare step writes,
see :mod:`bertops.trainer.holdout`). A set larger than ``maxRows`` is a seeded sample, the
same rows for both models. Labels are compared by name, so two models with different
label lists are still scored on the same rows (a label a model lacks is one it gets wrong).

Called through :func:`bertops.trainer.steps.run_step` (CLI: ``bertops trainer challenge``).
Models are verified and loaded, and rows encoded and predicted, by the evaluate step's
code (:func:`bertops.trainer.evaluate.open_model`). Writes ``report.json`` to ``outputUri``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
import torch

from bertops.api.artifacts import MODEL_MANIFEST, sha256_file
from bertops.api.steps import ChallengeDetails, ChallengeSet, ChallengeStep, StepResult
from bertops.trainer import artifacts_io, holdout, prepare
from bertops.trainer.distributed import DistContext
from bertops.trainer.errors import BadInputError
from bertops.trainer.evaluate import LoadedModel, open_model
from bertops.trainer.progress import Progress

REPORT_FILE = "report.json"
SetName = Literal["testSplit", "heldBackFeedback"]
TEST_SET: Final = "testSplit"
HOLDOUT_SET: Final = "heldBackFeedback"


@dataclass
class FrozenSet:
    """One set to score: its prepared rows (text, label_name, maybe input_ids) and the
    tokenizer its ids came from (None: unknown, every model re-tokenizes the text)."""

    name: SetName
    uri: str | None
    frame: pd.DataFrame
    tokenizer_info: dict[str, Any] | None


def sample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most ``max_rows`` rows, a seeded sample kept in the set's order."""
    if len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    chosen = np.sort(np.random.default_rng(seed).choice(len(frame), max_rows, replace=False))
    return frame.iloc[chosen].reset_index(drop=True)


def compare(
    frozen: FrozenSet,
    stable: LoadedModel,
    candidate: LoadedModel,
    step: ChallengeStep,
    ctx: DistContext,
    progress: Progress,
) -> ChallengeSet:
    """Both models' predictions on the (sampled) set, counted row by row."""
    frame = sample(frozen.frame, step.max_rows, step.seed)
    if frame.empty:
        return ChallengeSet(set=frozen.name, rows=0, available_rows=0)
    truth = frame["label_name"].tolist()
    right: dict[str, np.ndarray] = {}
    for role, loaded in (("stable", stable), ("candidate", candidate)):
        progress.message(f"{frozen.name}: {role} model predicts {len(frame)} rows")
        ids, _ = loaded.encode(frame, frozen.tokenizer_info, progress)
        predicted = loaded.predict(ids, step.batch_size, ctx)
        right[role] = np.array([p == t for p, t in zip(predicted, truth, strict=True)])
    s, c = right["stable"], right["candidate"]
    return ChallengeSet(
        set=frozen.name,
        rows=len(frame),
        available_rows=len(frozen.frame),
        stable_accuracy=float(s.mean()),
        candidate_accuracy=float(c.mean()),
        both_correct=int((s & c).sum()),
        candidate_only=int((c & ~s).sum()),
        stable_only=int((s & ~c).sum()),
        both_wrong=int((~s & ~c).sum()),
    )


def _open(role: str, uri: str, stack: contextlib.ExitStack, device: torch.device) -> LoadedModel:
    try:
        folder = stack.enter_context(artifacts_io.local_folder(uri, "model artifact"))
        return open_model(folder, device)
    except BadInputError as error:
        # Two models: the message must say which one cannot be used.
        raise BadInputError(f"{role} model: {error}") from error


def _test_set(step: ChallengeStep, stack: contextlib.ExitStack) -> tuple[FrozenSet, str]:
    """The stable model's test split and its dataset's checksum."""
    folder = stack.enter_context(artifacts_io.local_folder(step.test_uri, "prepared dataset"))
    manifest, _ = prepare.load_prepared(folder)
    frame = prepare.read_split(folder, "test")
    return FrozenSet(TEST_SET, step.test_uri, frame, manifest.tokenizer), manifest.checksum


def _holdout_set(step: ChallengeStep) -> FrozenSet:
    if step.holdout_uri is None:
        empty = pd.DataFrame({"text": pd.Series(dtype=str), "label_name": pd.Series(dtype=str)})
        return FrozenSet(HOLDOUT_SET, None, empty, None)
    # A file, maybe away from its dataset's manifest: the text is re-tokenized per model.
    return FrozenSet(HOLDOUT_SET, step.holdout_uri, holdout.read(step.holdout_uri), None)


def _describe(uri: str, loaded: LoadedModel) -> dict[str, Any]:
    return {
        "uri": uri,
        "name": loaded.manifest.name,
        "labels": loaded.manifest.labels,
        "manifestSha256": sha256_file(loaded.folder / MODEL_MANIFEST),
    }


def run_challenge(step: ChallengeStep, progress: Progress) -> StepResult:
    ctx = DistContext(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    with contextlib.ExitStack() as stack:
        # Inputs first, the cheap checks before the weights: a missing split fails fast.
        test_set, dataset_checksum = _test_set(step, stack)
        sets = [test_set, _holdout_set(step)]
        stable = _open("stable", step.stable_model_uri, stack, ctx.device)
        candidate = _open("candidate", step.candidate_model_uri, stack, ctx.device)
        progress.emit("start", message="challenge: stable and candidate on the frozen sets")
        compared = [compare(s, stable, candidate, step, ctx, progress) for s in sets]
        models = {
            "stableModel": _describe(step.stable_model_uri, stable),
            "candidateModel": _describe(step.candidate_model_uri, candidate),
        }
    report_uri = artifacts_io.join(step.output_uri, REPORT_FILE)
    report = {
        **models,
        "testUri": step.test_uri,
        "testDatasetChecksum": dataset_checksum,
        "holdoutUri": step.holdout_uri,
        "maxRows": step.max_rows,
        "seed": step.seed,
        "sets": [c.model_dump(mode="json", by_alias=True) for c in compared],
        "createdAt": datetime.now(UTC).isoformat(),
    }
    artifacts_io.write_text(report_uri, artifacts_io.dump_json(report))
    progress.emit("done", message="challenge finished")
    return _result(step, compared, models, report_uri, dataset_checksum)


def _result(
    step: ChallengeStep,
    compared: list[ChallengeSet],
    models: dict[str, dict[str, Any]],
    report_uri: str,
    dataset_checksum: str,
) -> StepResult:
    metrics: dict[str, float] = {}
    for entry in compared:
        metrics[f"{entry.set}.rows"] = float(entry.rows)
        if entry.stable_accuracy is not None and entry.candidate_accuracy is not None:
            metrics[f"{entry.set}.stableAccuracy"] = entry.stable_accuracy
            metrics[f"{entry.set}.candidateAccuracy"] = entry.candidate_accuracy
    return StepResult(
        kind="challenge",
        name=step.name,
        succeeded=True,
        metrics=metrics,
        artifacts={
            "report": report_uri,
            "stableModel": step.stable_model_uri,
            "candidateModel": step.candidate_model_uri,
        },
        checksums={
            "stableModelManifest": models["stableModel"]["manifestSha256"],
            "candidateModelManifest": models["candidateModel"]["manifestSha256"],
            "dataset": dataset_checksum,
        },
        details=ChallengeDetails(
            sets=compared,
            stable_model=models["stableModel"]["name"],
            candidate_model=models["candidateModel"]["name"],
            report_uri=report_uri,
        ),
    )
