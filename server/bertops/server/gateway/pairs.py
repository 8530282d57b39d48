"""A pair: a candidate model's labels next to stable's on the same texts (the canary's
answer and stable's pair call, or stable's answer and the shadow's), and how feedback
scores both on one text.

Built by :mod:`~bertops.server.gateway.pairing`, kept on the remembered answer by
:class:`~bertops.server.gateway.feedback.ServedStore` and scored by
:class:`~bertops.server.gateway.feedback.FeedbackDesk` (or by the pairing, for feedback
that came first).
"""

from __future__ import annotations

from dataclasses import dataclass

from bertops.server.gateway.metrics import GatewayMetrics

PER_LABEL = 60  # what one remembered label costs beyond its characters (approximate)
PAIR_OVERHEAD = 250  # the Pair dataclass and its two tuples


@dataclass(frozen=True)
class Pair:
    """A candidate's labels next to stable's on the same texts (see
    :mod:`~bertops.server.gateway.pairing`), remembered to score both on feedback."""

    variant: str  # the candidate: "canary" (routes.compare) or "shadow"
    model: str  # the candidate's model
    stable_model: str
    candidate: tuple[str, ...]  # the candidate's label of each text
    stable: tuple[str, ...]  # stable's label of each text

    @property
    def cost(self) -> int:
        labels = sum(PER_LABEL + len(label) for label in (*self.candidate, *self.stable))
        return PAIR_OVERHEAD + len(self.model) + len(self.stable_model) + labels

    def outcome(self, index: int, truth: str) -> str | None:
        """Both models judged on one text: both_correct, candidate_only, stable_only or
        both_wrong; None when the pair has no such text."""
        if index >= min(len(self.candidate), len(self.stable)):
            return None
        candidate, stable = self.candidate[index] == truth, self.stable[index] == truth
        if candidate and stable:
            return "both_correct"
        if candidate:
            return "candidate_only"
        return "stable_only" if stable else "both_wrong"


def score_pair(metrics: GatewayMetrics, pair: Pair, index: int, truth: str) -> None:
    """Count both models of a pair judged on one text (nothing when the pair lacks it)."""
    outcome = pair.outcome(index, truth)
    if outcome is not None:
        metrics.paired_feedback.labels(pair.variant, pair.model, pair.stable_model, outcome).inc()
