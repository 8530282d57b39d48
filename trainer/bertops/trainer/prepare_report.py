"""What the ``prepare`` step reports: the content of the dataset's ``stats.json`` (rows per
split and label, drops, token lengths, unknown-token rate, the holdout) and the step's
:class:`~bertops.api.steps.StepResult` with its typed details.

Called by :mod:`bertops.trainer.prepare` once the splits (and the holdout) are tokenized;
the operator copies the details into the BertDataset's status.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bertops.api.dataset import BertDatasetSpec, DataSource
from bertops.api.steps import PrepareDetails, PrepareStep, StepResult
from bertops.trainer import io, sources


def _percentile(values: list[int], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else 0.0


def dataset_stats(
    spec: BertDatasetSpec,
    read: sources.Sources,
    splits: dict[str, pd.DataFrame],
    lengths: list[int],
    unknown_rate: float,
    names: list[str],
    dropped: dict[str, int],
    lowercase: bool,
) -> dict[str, Any]:
    """stats.json: ``splits`` by name in artifact order, ``lengths`` the token counts
    before truncation of all their rows."""
    max_length = spec.tokenizer.max_length
    rows = {name: len(split) for name, split in splits.items()}
    rows["total"] = sum(rows.values())
    per_split_label = {
        name: {label: int((split["label_name"] == label).sum()) for label in names}
        for name, split in splits.items()
    }
    return {
        "source": _source_stats(spec.source, read.main),
        "additionalSources": [
            _source_stats(source, extra)
            for source, extra in zip(spec.additional_sources or (), read.additional, strict=True)
        ],
        "sourceRows": read.rows_read(),
        "rows": rows,
        "rowsPerSplitAndLabel": per_split_label,
        "labelCounts": {label: sum(c[label] for c in per_split_label.values()) for label in names},
        "droppedRows": {k: v for k, v in dropped.items() if v},
        "lowercased": lowercase,
        "tokenLength": {
            "p50": _percentile(lengths, 50),
            "p90": _percentile(lengths, 90),
            "p95": _percentile(lengths, 95),
            "p99": _percentile(lengths, 99),
            "max": max(lengths),
            "maxLength": max_length,
            "truncated": sum(1 for n in lengths if n > max_length),
        },
        "unknownTokenRate": unknown_rate,
    }


def _source_stats(source: DataSource, raw: io.RawData) -> dict[str, Any]:
    return {
        "uri": source.uri,
        "format": raw.format,
        "rowsRead": raw.rows_read,
        "invalidByteSequences": raw.invalid_byte_sequences,
        "encodingErrors": source.encoding_errors,
    }


def step_result(
    step: PrepareStep,
    stats: dict[str, Any],
    checksum: str,
    read: sources.Sources,
    holdout_uri: str | None,
    holdout_rows: int | None,
) -> StepResult:
    """The result of a finished prepare step (``holdout_uri`` None: no source has one)."""
    rows: dict[str, int] = stats["rows"]
    names = list(stats["labelCounts"])
    details = PrepareDetails(
        artifact_uri=step.output_uri,
        checksum=checksum,
        short_checksum=checksum[:12],
        rows=rows,
        labels=names,
        num_labels=len(names),
        label_counts=stats["labelCounts"],
        dropped_rows=stats["droppedRows"],
        token_length_p50=stats["tokenLength"]["p50"],
        token_length_p95=stats["tokenLength"]["p95"],
        unknown_token_rate=stats["unknownTokenRate"],
        invalid_byte_sequences=read.invalid_byte_sequences,
        source_rows=read.rows_read(),
        holdout_uri=holdout_uri,
        holdout_rows=holdout_rows,
    )
    metrics = {f"rows.{k}": float(v) for k, v in rows.items()}
    metrics["unknownTokenRate"] = float(stats["unknownTokenRate"])
    metrics["tokenLengthP95"] = float(stats["tokenLength"]["p95"])
    artifacts = {"dataset": step.output_uri}
    if holdout_uri is not None:
        artifacts["holdout"] = holdout_uri
        metrics["rows.holdout"] = float(holdout_rows or 0)
    return StepResult(
        kind="prepare",
        name=step.name,
        succeeded=True,
        metrics=metrics,
        artifacts=artifacts,
        checksums={"dataset": checksum},
        details=details,
    )
