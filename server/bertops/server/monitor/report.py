"""The comparison itself: reference rows and window rows (prediction-log lines) become two
Evidently datasets, one Evidently report computes a drift signal per column (the
embeddings as a whole, each text descriptor, the predicted label), and the snapshot is
rendered as Evidently's own HTML and JSON.

Called by :mod:`bertops.server.monitor.drift`. Evidently, pandas and numpy are imported
here only, and the run is wrapped so its known noisy warnings stay local (tests run with
warnings as errors).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bertops.api.results import DriftSignal
from bertops.server.descriptors import DESCRIPTOR_KEYS

EMBEDDINGS = "embeddings"
LABEL = "label"
EMBEDDING_PREFIX = "emb_"
PLOT_SAMPLE = 200
"""Rows per side in the embeddings plot of the HTML report. Evidently projects up to
2,500 rows per side with t-SNE for that plot alone (the drift score uses every row): 80 of
the 100 seconds of a 2,000/1,000-row check on a busy 2-core machine. 200 a side keeps the
picture and makes the whole check about 5 s."""


@dataclass
class Comparison:
    """The signals of one check, Evidently's rendered report, and why a signal is absent."""

    signals: list[DriftSignal]
    html: str
    json: str
    notes: list[str] = field(default_factory=list)


def embedding_method(name: str) -> Any:
    """Evidently's embedding drift method for the spec's ``method``, at Evidently's default
    thresholds, without bootstrap (a fixed threshold: the same data give the same answer).
    The methods are deterministic: ``model`` splits and fits with a fixed random_state."""
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import (
        DistanceDriftMethod,
        MMDDriftMethod,
        ModelDriftMethod,
        RatioDriftMethod,
    )

    if name == "ratio":
        return RatioDriftMethod()  # no bootstrap option: a share of drifted components
    factory = {"model": ModelDriftMethod, "mmd": MMDDriftMethod, "distance": DistanceDriftMethod}
    return factory[name](bootstrap=False)


def _embedding_dim(rows: list[dict[str, Any]]) -> int:
    """The embedding length shared by every row; 0 when any row lacks one or they differ."""
    dims = {len(row["embedding"]) if row.get("embedding") else 0 for row in rows}
    return dims.pop() if len(dims) == 1 else 0


def columns(
    reference: list[dict[str, Any]], window: list[dict[str, Any]]
) -> tuple[int, list[str], list[str]]:
    """(embedding dimension or 0, descriptors present in every row of both sides, notes)."""
    notes = []
    dim = _embedding_dim(reference)
    if dim and _embedding_dim(window) != dim:
        notes.append(f"{EMBEDDINGS}: not every window row has a {dim}-float embedding")
        dim = 0
    elif not dim:
        notes.append(f"{EMBEDDINGS}: the reference has none (the model exposes no hidden state)")
    descriptors = []
    for key in DESCRIPTOR_KEYS:
        if all(key in row for row in reference) and all(key in row for row in window):
            descriptors.append(key)
        else:
            notes.append(f"{key}: missing in some rows (a log written before it was recorded)")
    return dim, descriptors, notes


def _frame(rows: list[dict[str, Any]], dim: int, descriptors: list[str]) -> Any:
    import numpy as np
    import pandas as pd

    data: dict[str, Any] = {LABEL: [str(row[LABEL]) for row in rows]}
    for key in descriptors:
        data[key] = [float(row[key]) for row in rows]
    frame = pd.DataFrame(data)
    if dim:
        matrix = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        names = [f"{EMBEDDING_PREFIX}{i}" for i in range(dim)]
        frame = pd.concat([frame, pd.DataFrame(matrix, columns=names)], axis=1)
    return frame


THREADS = 1
"""OpenMP/BLAS threads during a check. sklearn's t-SNE (the plot) spins OpenMP threads
sized to the host's cores: on a busy 2-core machine one thread ran it 9x faster (2.3 s
against 20.9 s for 300/150 rows), and a pod's CPU limit is smaller than its host's cores."""


def _quiet() -> None:
    """Ignore the deprecation warnings Evidently 0.7.23 triggers in its own imports (numpy's
    ``numpy.core`` rename, litestar's ``Dependency``): not ours to fix, and harmless.
    Called inside ``warnings.catch_warnings()``, so nothing changes outside the check."""
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(evidently|litestar)\.")


@contextlib.contextmanager
def _plot_sample(rows: int) -> Iterator[None]:
    """Evidently reads the plot's sample size from a module constant at call time; set it
    for the duration of one run (a step process runs one check at a time)."""
    from evidently.legacy.metrics.data_drift import embeddings_drift

    previous = embeddings_drift.SAMPLE_CONSTANT
    embeddings_drift.SAMPLE_CONSTANT = rows
    try:
        yield
    finally:
        embeddings_drift.SAMPLE_CONSTANT = previous


def _run(reference: Any, current: Any, dim: int, descriptors: list[str], method: str) -> Any:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift, ValueDrift

    embeddings = [f"{EMBEDDING_PREFIX}{i}" for i in range(dim)]
    definition = DataDefinition(
        numerical_columns=descriptors,
        categorical_columns=[LABEL],
        embeddings={EMBEDDINGS: embeddings} if dim else None,
    )
    metrics: list[Any] = [ValueDrift(column=key) for key in [*descriptors, LABEL]]
    if dim:
        metrics.insert(
            0, EmbeddingsDrift(embeddings_name=EMBEDDINGS, drift_method=embedding_method(method))
        )
    report = Report(metrics, include_tests=True)
    return report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )


def _signals(snapshot: Any, method: str) -> list[DriftSignal]:
    """One signal per metric of the snapshot: ValueDrift's verdict is its test's status
    (Evidently knows whether its statistic is a p-value or a distance); the embeddings'
    verdict is the method's own rule, statistic above the method's threshold."""
    document = snapshot.dict()
    verdicts = {
        test["metric_config"]["metric_id"]: test["status"] == "FAIL"
        for test in document.get("tests", [])
    }
    signals = []
    for metric in document["metrics"]:
        config, value = metric["config"], float(metric["value"])
        if config["type"].endswith("EmbeddingsDrift"):
            threshold = float(config["drift_method"]["threshold"])
            signals.append(
                DriftSignal(
                    name=EMBEDDINGS,
                    method=method,
                    value=value,
                    threshold=threshold,
                    drifted=value > threshold,
                )
            )
        else:
            signals.append(
                DriftSignal(
                    name=config["column"],
                    method=config.get("method"),
                    value=value,
                    threshold=config.get("threshold"),
                    drifted=verdicts.get(metric["id"], False),
                )
            )
    return signals


def compare(
    reference_rows: list[dict[str, Any]], window_rows: list[dict[str, Any]], method: str
) -> Comparison:
    """Run the report over both sides and render it."""
    dim, descriptors, notes = columns(reference_rows, window_rows)
    reference = _frame(reference_rows, dim, descriptors)
    current = _frame(window_rows, dim, descriptors)
    with warnings.catch_warnings():
        _quiet()
        from threadpoolctl import threadpool_limits

        with _plot_sample(PLOT_SAMPLE), threadpool_limits(limits=THREADS):
            snapshot = _run(reference, current, dim, descriptors, method)
        signals = _signals(snapshot, method)
        html = snapshot.get_html_str(as_iframe=False)
        text = snapshot.json()
    return Comparison(signals=signals, html=html, json=text, notes=notes)
