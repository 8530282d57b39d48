"""Classification metrics: loss, accuracy, macro-F1/precision/recall, a per-class report
and the confusion matrix, in the camelCase shape of
:class:`~bertops.api.training.ClassificationMetrics` plus the detail fields.

Called by train (each epoch on validation, at the end on test) and evaluate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SUMMARY_KEYS = ("loss", "accuracy", "macroF1", "precision", "recall")


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], labels: list[str], loss: float | None = None
) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    true = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    ids = list(range(len(labels)))
    if len(true) == 0:
        return {
            "loss": loss,
            "accuracy": None,
            "macroF1": None,
            "precision": None,
            "recall": None,
            "support": 0,
            "perClass": {},
            "confusionMatrix": [],
        }
    # zero_division=0: a class never predicted scores 0 instead of warning.
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=ids, zero_division=0
    )
    macro_p, macro_r, macro_f1, _ = precision_recall_fscore_support(
        true, pred, labels=ids, average="macro", zero_division=0
    )
    per_class = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    return {
        "loss": loss,
        "accuracy": float((true == pred).mean()),
        "macroF1": float(macro_f1),
        "precision": float(macro_p),
        "recall": float(macro_r),
        "support": len(true),
        "perClass": per_class,
        "confusionMatrix": confusion_matrix(true, pred, labels=ids).tolist(),
    }


def summary(metrics: dict[str, Any]) -> dict[str, float]:
    """Only the ClassificationMetrics fields (what goes into status)."""
    return {k: float(metrics[k]) for k in SUMMARY_KEYS if metrics.get(k) is not None}


def majority_baseline(train_labels: Sequence[int], y_true: Sequence[int]) -> float:
    """Accuracy of always predicting train's most frequent class."""
    if len(y_true) == 0:
        return 0.0
    majority = int(np.bincount(np.asarray(train_labels)).argmax())
    return float((np.asarray(y_true) == majority).mean())
