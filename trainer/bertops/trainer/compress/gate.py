"""The quality gate of a compression recipe: the variant's test accuracy and macro-F1
against the parent's, on the same rows, with the allowed drops of
:class:`~bertops.api.model.QualityGate`.

Called by :mod:`bertops.trainer.compress.finish` before anything is written: a variant
that fails leaves no artifact, and the step's result says which metric fell how far.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bertops.api.model import QualityDelta, QualityGate


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    delta: QualityDelta
    message: str

    def delta_json(self) -> dict[str, Any]:
        return self.delta.model_dump(by_alias=True, exclude_none=True)


def check(parent: dict[str, Any], variant: dict[str, Any], gate: QualityGate) -> GateVerdict:
    """Delta = variant minus parent (negative = worse); fails when a drop exceeds its bound."""
    delta = QualityDelta(
        accuracy=round(variant["accuracy"] - parent["accuracy"], 6),
        macro_f1=round(variant["macroF1"] - parent["macroF1"], 6),
    )
    failures = []
    for label, key, allowed, field in (
        ("accuracy", "accuracy", gate.max_accuracy_drop, "maxAccuracyDrop"),
        ("macro-F1", "macroF1", gate.max_f1_drop, "maxF1Drop"),
    ):
        drop = parent[key] - variant[key]
        # A tiny epsilon: a drop exactly at the bound passes despite float rounding.
        if drop > allowed + 1e-9:
            failures.append(
                f"{label} dropped {drop:.2f} ({parent[key]:.2f} -> "
                f"{variant[key]:.2f}) > {field} {allowed:g}"
            )
    if failures:
        return GateVerdict(False, delta, "; ".join(failures))
    return GateVerdict(
        True,
        delta,
        f"within the gate: accuracy {delta.accuracy:+.4f}, macro-F1 {delta.macro_f1:+.4f}",
    )
