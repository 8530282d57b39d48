"""The ``reference`` step: run a model over a seeded sample of its dataset's split and keep,
per row, what the drift check compares production traffic with (the model's sentence
embedding, the text descriptors, the predicted label), in the prediction log's own line
format; and :func:`load_reference`, which the drift check reads it back with.

Called by the trainer's step runner (``bertops trainer reference --spec FILE``). The model
is verified and loaded by :class:`bertops.server.model.ServedModel`, and the lines are
written by :class:`bertops.server.predictionlog.PredictionLog`, exactly as the server
does, so reference rows and production rows come from the same code. Layout of
``output_uri`` (published atomically: the old reference or the new one, never a mix)::

    reference.jsonl          one prediction-log line per sampled row
    bertops-reference.json   ReferenceManifest: model, dataset, rows, sha256 of the lines
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from bertops.api.artifacts import FileDigest, digest_folder, sha256_file
from bertops.api.meta import ApiModel
from bertops.api.steps import ReferenceDetails, ReferenceStep, StepResult
from bertops.server.monitor import (
    REASON_INVALID_INPUT,
    REASON_REFERENCE_UNAVAILABLE,
    REASON_REFERENCE_WRITE_FAILED,
    MonitorInputError,
    MonitorTransientError,
)
from bertops.server.monitor.dataset import SplitSample, sample_split
from bertops.server.monitor.store import check_output, local_input, staged_output

REFERENCE_FILE = "reference.jsonl"
REFERENCE_MANIFEST = "bertops-reference.json"
BATCH = 64
MAX_MANIFEST_BYTES = 1 << 20

Say = Callable[[str], None]
"""Where progress lines go (the trainer's Progress.message)."""


class ReferenceManifest(ApiModel):
    """What a reference holds and where it came from; written last, it seals the folder."""

    model_config = {"extra": "ignore"}

    format_version: Literal[1] = 1
    model_name: str
    model_version: str
    model_manifest_sha256: str = ""
    dataset_checksum: str
    split: str
    seed: int
    rows: int
    embedding_dim: int = Field(description="0: the model gives no embedding.")
    label_counts: dict[str, int] = Field(default_factory=dict)
    files: list[FileDigest]
    created_at: datetime | None = None


def _predict(model: Any, texts: list[str], say: Say) -> tuple[list[Any], list[float]]:
    """Predictions for every text, in batches, and each row's share of its batch time."""
    predictions: list[Any] = []
    latencies: list[float] = []
    for start in range(0, len(texts), BATCH):
        batch = texts[start : start + BATCH]
        began = time.perf_counter()
        predictions.extend(model.predict(batch))
        latencies.extend([(time.perf_counter() - began) * 1000 / len(batch)] * len(batch))
        if start // BATCH % 10 == 0:
            say(f"reference: {min(start + BATCH, len(texts))}/{len(texts)} rows")
    return predictions, latencies


def _write_lines(path: Path, records: list[Any]) -> None:
    """Write the records through the server's own prediction log writer (same format)."""
    from bertops.server.predictionlog import PredictionLog

    log = PredictionLog(path, privacy="hash", max_bytes=1 << 40, backups=1)
    log.write(records)
    log.close(timeout=600)
    if log.written != len(records):
        # The writer drops what it cannot write (a full disk): a short reference is worse
        # than none, and a retry may find room.
        raise MonitorTransientError(
            f"wrote {log.written} of {len(records)} reference rows to {path}",
            REASON_REFERENCE_WRITE_FAILED,
        )


def _records(
    run: str,
    name: str,
    version: str,
    sample: SplitSample,
    predictions: list[Any],
    latencies: list[float],
) -> list[Any]:
    """One prediction-log record per sampled row (``index``: its row in the split)."""
    from bertops.server.predictionlog import PredictionRecord

    now = time.time()
    return [
        PredictionRecord(
            time=now,
            model=name,
            model_version=version,
            request_id=f"reference-{run}",
            index=index,
            text=text,
            label=prediction.label,
            confidence=prediction.score,
            latency_ms=latency,
            tokens=prediction.tokens,
            unknown_tokens=prediction.unknown_tokens,
            embedding=prediction.embedding,
        )
        for index, text, prediction, latency in zip(
            sample.indices, sample.texts, predictions, latencies, strict=True
        )
    ]


def run_reference(step: ReferenceStep, say: Say | None = None) -> StepResult:
    """Sample, predict, write and seal the reference; the step's result."""
    from bertops.server.model import ModelOutputError, ServedModel

    say = say or (lambda _text: None)
    served = ServedModel(uri=step.model_uri, name=step.model_name, warmup_batch_sizes=(1,))
    artifact = served.verify()  # ArtifactError (exit 2) before anything is read
    check_output(step.output_uri, "the reference", REASON_REFERENCE_WRITE_FAILED)
    with local_input(step.dataset_uri, "prepared dataset", REASON_INVALID_INPUT) as folder:
        sample = sample_split(folder, step.split, step.size, step.seed)
    say(f"reference: {len(sample.texts)} of {sample.split_rows} {step.split} rows")
    try:
        served.load()
    except ModelOutputError as error:  # NaN weights: the same artifact fails again
        raise MonitorInputError(str(error)) from error
    predictions, latencies = _predict(served, sample.texts, say)
    name = served.name or artifact.version
    records = _records(step.name, name, artifact.version, sample, predictions, latencies)
    dims = {len(p.embedding) for p in predictions if p.embedding is not None}
    embedding_dim = dims.pop() if len(dims) == 1 else 0
    counts = dict(sorted(Counter(p.label for p in predictions).items()))
    with staged_output(
        step.output_uri, "the reference", REASON_REFERENCE_WRITE_FAILED, REFERENCE_MANIFEST
    ) as staging:
        _write_lines(staging / REFERENCE_FILE, records)
        manifest = ReferenceManifest(
            model_name=name,
            model_version=artifact.version,
            model_manifest_sha256=artifact.manifest_sha256,
            dataset_checksum=sample.checksum,
            split=step.split,
            seed=step.seed,
            rows=len(records),
            embedding_dim=embedding_dim,
            label_counts=counts,
            files=digest_folder(staging),
            created_at=datetime.now(UTC),
        )
        text = manifest.model_dump_json(by_alias=True, indent=2)
        (staging / REFERENCE_MANIFEST).write_text(text, encoding="utf-8")
    return StepResult(
        kind="reference",
        name=step.name,
        succeeded=True,
        metrics={"rows": float(len(records)), "embeddingDim": float(embedding_dim)},
        artifacts={"reference": step.output_uri, "model": step.model_uri},
        checksums={"referenceRows": manifest.files[0].sha256, "dataset": sample.checksum},
        details=ReferenceDetails(
            artifact_uri=step.output_uri,
            rows=len(records),
            split=step.split,
            model_name=name,
            model_version=artifact.version,
            embedding_dim=embedding_dim,
            label_counts=counts,
        ),
    )


def _read_manifest(folder: Path) -> ReferenceManifest:
    path = folder / REFERENCE_MANIFEST
    if not path.is_file():
        raise MonitorInputError(
            f"{folder} has no {REFERENCE_MANIFEST}: not a reference, or one still being "
            "written (run the reference step first)",
            REASON_REFERENCE_UNAVAILABLE,
        )
    with path.open("rb") as handle:
        raw = handle.read(MAX_MANIFEST_BYTES + 1)
    try:
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ValueError(f"over {MAX_MANIFEST_BYTES} bytes")
        return ReferenceManifest.model_validate_json(raw)
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise MonitorInputError(
            f"{path} is not a valid reference manifest: {str(error).splitlines()[0]}",
            REASON_REFERENCE_UNAVAILABLE,
        ) from error


def load_reference(uri: str) -> tuple[ReferenceManifest, list[dict[str, Any]]]:
    """The verified reference at ``uri`` and its rows; :class:`MonitorInputError` with
    reason ``ReferenceUnavailable`` when it is missing, unsealed or corrupt."""
    from bertops.server.predictionlog import read_window

    with (
        local_input(uri, "reference", REASON_REFERENCE_UNAVAILABLE) as folder,
        tempfile.TemporaryDirectory(prefix="bertops-reference-") as scratch,
    ):
        manifest = _read_manifest(folder)
        entry = next((f for f in manifest.files if f.path == REFERENCE_FILE), None)
        source, copy = folder / REFERENCE_FILE, Path(scratch) / REFERENCE_FILE
        # The rows are read from a private copy that is then hashed: what is compared is
        # exactly what matched the manifest, and no stray *.jsonl beside it is read.
        if entry is not None and source.is_file() and not source.is_symlink():
            shutil.copyfile(source, copy)
        if entry is None or not copy.is_file() or sha256_file(copy) != entry.sha256:
            raise MonitorInputError(
                f"{source} is missing or does not match its manifest (sha256): the reference "
                "is corrupt; run the reference step again",
                REASON_REFERENCE_UNAVAILABLE,
            )
        rows, skipped = read_window(Path(scratch), manifest.rows + 1)
    if skipped or len(rows) != manifest.rows:
        raise MonitorInputError(
            f"reference {uri}: {len(rows)} readable rows and {skipped} unreadable ones, its "
            f"manifest says {manifest.rows}",
            REASON_REFERENCE_UNAVAILABLE,
        )
    return manifest, rows
