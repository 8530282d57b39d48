"""Champion/challenger as a pure verdict: given both models' scores on the frozen sets
(the stable model's test split, the feedback held back from the candidate's dataset),
whether the candidate may get any traffic.

:func:`admitted` is the state machine's side (:mod:`~bertops.operator.rollout.state`
calls it before a new model's rollout starts): it asks for the evaluation, holds while it
runs, and starts the canary or records the refusal with the numbers. :func:`verdict` is
called by :mod:`bertops.operator.deployment.challenge` when the evaluation step
(``bertops trainer challenge``) has finished. The rules:

- on the held-back feedback (the traffic the model is retrained for), the candidate must
  be more accurate than stable;
- on stable's own test split (what stable was made for), it may be at most
  ``analysis.maxOfflineDrop`` less accurate;
- a set with no rows does not judge (said so in the message).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from bertops.api import deployment as api
from bertops.api.meta import ConditionStatus
from bertops.api.results import ChallengeSet

Phase = Literal["Passed", "Refused"]


@dataclass(frozen=True)
class ChallengeVerdict:
    phase: Phase
    message: str
    scores: list[api.ChallengeScore]


def _score(found: ChallengeSet) -> api.ChallengeScore:
    return api.ChallengeScore(
        set=found.set,
        rows=found.rows,
        stable=found.stable_accuracy,
        candidate=found.candidate_accuracy,
    )


def _judge(found: ChallengeSet, max_drop: float) -> tuple[bool, str]:
    """(refused, sentence) for one set."""
    old, new = found.stable_accuracy, found.candidate_accuracy
    if found.rows <= 0 or old is None or new is None:
        return False, f"{found.set}: no rows, not judged"
    numbers = f"{found.set} ({found.rows} rows): {new:.3f} against stable's {old:.3f}"
    if found.set == "heldBackFeedback":
        if new > old:
            return False, f"{numbers}, better"
        return True, f"{numbers}, not better on the held-back feedback"
    if new < old - max_drop:
        return True, f"{numbers}, more than maxOfflineDrop {max_drop:g} worse"
    return False, f"{numbers}, within maxOfflineDrop {max_drop:g}"


def verdict(sets: list[ChallengeSet], analysis: api.Analysis) -> ChallengeVerdict:
    judged = [_judge(found, analysis.max_offline_drop) for found in sets]
    refused = [text for failed, text in judged if failed]
    scores = [_score(found) for found in sets]
    if refused:
        return ChallengeVerdict("Refused", "; ".join(refused), scores)
    return ChallengeVerdict("Passed", "; ".join(text for _, text in judged), scores)


class Admission(Protocol):
    """What admitting a model needs of one ``decide`` call (its ``_Run``)."""

    spec: api.BertDeploymentSpec
    st: api.BertDeploymentStatus
    now: datetime
    hold: tuple[ConditionStatus, str, str] | None
    requeue: float | None
    degraded: tuple[bool, str, str] | None

    @property
    def interval(self) -> float: ...

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None: ...

    def record(
        self,
        model: str,
        outcome: Literal["Refused"],
        message: str,
        scores: list[api.ChallengeScore] | None = None,
    ) -> None: ...


def admitted(run: Admission, model: str) -> bool:
    """Champion/challenger: whether ``model`` may get traffic. The first time it is
    seen, an offline evaluation is requested (``status.challenge`` Running: the
    reconciler runs the step and fills in the scores); a refusal rejects the model
    with the numbers, before any traffic moved."""
    st, stable = run.st, run.st.stable_model
    if not run.spec.rollout.analysis.offline_evaluation or stable is None:
        return True
    challenge = st.challenge
    if challenge is None or (challenge.model, challenge.stable) != (model, stable):
        st.challenge = api.ChallengeStatus(model=model, stable=stable, at=run.now)
        run.event(
            "Normal",
            api.REASON_CHALLENGE_RUNNING,
            f"scoring {model} against {stable} on frozen sets before any traffic",
        )
        challenge = st.challenge
    if challenge.phase == "Passed":
        return True
    if challenge.phase == "Running":
        run.hold = (
            ConditionStatus.UNKNOWN,
            api.REASON_CHALLENGE_RUNNING,
            f"{model} is scored against {stable} offline before any traffic",
        )
        run.requeue = run.interval
        return False
    reason = (
        api.REASON_CHALLENGE_REFUSED
        if challenge.phase == "Refused"
        else api.REASON_CHALLENGE_FAILED
    )
    message = f"{model} gets no traffic: {challenge.message or challenge.phase}"
    st.rejected_model = model
    run.record(model, "Refused", message, challenge.scores)
    run.event("Warning", reason, message)
    run.degraded = (True, reason, message)
    return False
