"""What a gate decides (:class:`GateResult`) and how: where an interval lies against a
bound (:func:`decide_against`) and the "not enough data yet" result (:func:`too_few`).

Used by :mod:`bertops.operator.rollout.gates` (every gate) and read by the state machine
(:mod:`~bertops.operator.rollout.state`) and the status (:mod:`.conditions`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from bertops.operator.rollout import stats

Verdict = Literal["pass", "fail", "unsure", "report"]


@dataclass(frozen=True)
class GateResult:
    name: str
    verdict: Verdict
    value: float | None
    threshold: float | None
    message: str
    reason: str  # the Degraded reason when this gate fails
    lower: float | None = None
    upper: float | None = None
    level: float | None = None
    samples: float | None = None
    needed: int | None = None

    @property
    def passed(self) -> bool | None:
        """True/False when decided; None when not yet sure or only reported."""
        return {"pass": True, "fail": False}.get(self.verdict)

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"

    @property
    def unsure(self) -> bool:
        return self.verdict == "unsure"


def fmt(value: float | None) -> str:
    return "?" if value is None or math.isnan(value) else f"{value:.4g}"


def decide_against(
    name: str,
    reason: str,
    interval: stats.Interval,
    threshold: float,
    samples: float,
    what: str,
    *,
    higher_is_better: bool,
) -> GateResult:
    """pass / fail / unsure from where the interval lies against the threshold."""
    good, bad = (
        (interval.lower >= threshold, interval.upper < threshold)
        if higher_is_better
        else (interval.upper <= threshold, interval.lower > threshold)
    )
    verdict: Verdict = "pass" if good else "fail" if bad else "unsure"
    needed = None if verdict != "unsure" else stats.more_needed(interval, threshold, samples)
    side = ">=" if higher_is_better else "<="
    span = f"[{fmt(interval.lower)}, {fmt(interval.upper)}] at {interval.level * 100:.4g}%"
    more = f", needs about {needed} more" if needed else ", may never decide" if good is bad else ""
    text = {"pass": "within", "fail": "beyond", "unsure": "not yet sure against"}[verdict]
    message = (
        f"{what} {fmt(interval.estimate)} {span}: {text} the bound {side} {threshold:.4g}"
        f"{more if verdict == 'unsure' else ''}"
    )
    return GateResult(
        name,
        verdict,
        interval.estimate,
        threshold,
        message,
        reason,
        lower=interval.lower,
        upper=interval.upper,
        level=interval.level,
        samples=samples,
        needed=needed,
    )


def too_few(
    name: str, reason: str, threshold: float | None, have: float, need: int, what: str
) -> GateResult:
    return GateResult(
        name,
        "unsure",
        None,
        threshold,
        f"{what}: {have:.0f} of the {need} needed before judging",
        reason,
        samples=have,
        needed=max(1, math.ceil(need - have)),
    )
