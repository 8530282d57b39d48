"""The retrain policy of a BertDeployment as pure functions: whether a drifted check may
start a retraining now (:func:`may_retrain`), whether it first waits for new feedback
labels (:func:`begin_wait`) and, at each later reconcile, whether the wait is over
(:func:`decide_wait`), and where a started one's chain stands (:func:`follow_chain`:
drift -> dataset -> training -> model -> rollout).

Called by :mod:`bertops.operator.deployment.monitor_chain` after each drift result and at
every reconcile while a retraining waits or is active; the builders of the objects a
retraining creates are in :mod:`bertops.operator.deployment.retrain`. No I/O here, so the
guards and the wait are tested table-driven (tests/operator/test_retrain_policy.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from bertops.api import deployment as api

# Chain outcomes after which a retraining no longer counts as running.
ENDED = {"Failed", "Promoted", "RolledBack", "Refused", "NotSelected"}


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str  # a named reason for the Event (RetrainStarted / RetrainSkipped)
    message: str


def retrains_in_window(retrains: api.RetrainStatus | None, now: datetime, seconds: int) -> int:
    """Retrainings started within the last ``seconds`` (from the bounded history)."""
    if retrains is None or not retrains.history:
        return 0
    since = now - timedelta(seconds=seconds)
    return sum(1 for record in retrains.history if record.at > since)


def may_retrain(
    spec: api.BertDeploymentSpec, status: api.BertDeploymentStatus, now: datetime
) -> Verdict:
    """The guards, in order: enabled; a selector (a fixed ``model.ref`` could never roll
    the new model out); the last check drifted; no retraining running; the cooldown since
    the last one; at most ``maxRetrains`` per ``windowSeconds``."""
    policy = spec.retrain
    skip = api.REASON_RETRAIN_SKIPPED
    if not policy.enabled:
        return Verdict(False, skip, "retrain.enabled is false")
    if spec.model.selector is None:
        return Verdict(
            False,
            skip,
            "model.ref names a fixed model, so a retrained model could never roll out: "
            "use model.selector with a family to retrain on drift",
        )
    drift = status.drift
    if drift is None or drift.drifted is not True:
        return Verdict(False, skip, "the last drift check did not find drift")
    retrains = status.retrains
    if retrains is not None and retrains.active:
        return Verdict(False, skip, f"retraining {retrains.active} is still running")
    if retrains is not None and retrains.last_at is not None:
        ready_at = retrains.last_at + timedelta(seconds=policy.cooldown_seconds)
        if now < ready_at:
            return Verdict(
                False,
                skip,
                f"in cooldown until {ready_at:%Y-%m-%dT%H:%M:%SZ} "
                f"(retrain.cooldownSeconds {policy.cooldown_seconds})",
            )
    recent = retrains_in_window(retrains, now, policy.window_seconds)
    if recent >= policy.max_retrains:
        return Verdict(
            False,
            skip,
            f"{recent} retraining(s) in the last {policy.window_seconds}s already "
            f"(retrain.maxRetrains {policy.max_retrains})",
        )
    score = f"{drift.score:.2f}" if drift.score is not None else "?"
    return Verdict(True, api.REASON_RETRAIN_STARTED, f"drift score {score}")


@dataclass(frozen=True)
class ChainView:
    """What the operator sees of one retraining's objects (read by the monitor)."""

    training_outcome: str | None  # "Running", "Succeeded", "Failed" or None (not found)
    training_message: str = ""
    model_ready: bool = False


def follow_chain(
    record: api.RetrainRecord, view: ChainView, status: api.BertDeploymentStatus
) -> tuple[str, str | None]:
    """The record's next outcome and message, from its training and the rollout:
    Running -> Trained (the model is registered; it stays Trained while its offline
    evaluation runs) -> Promoted / RolledBack / Refused (the rollout's history names the
    model) or NotSelected (the model is Ready, yet neither canary, stable nor under
    evaluation while no other rollout runs: the selection policy did not pick it)."""
    if record.outcome in ENDED:
        return record.outcome, record.message
    model = record.model
    if model and status.stable_model == model:
        return "Promoted", f"{model} is the stable model"
    for entry in reversed(status.history or []):
        if model and entry.model == model and entry.outcome in ("RolledBack", "Aborted"):
            return "RolledBack", entry.message
        if model and entry.model == model and entry.outcome == "Refused":
            return "Refused", entry.message
    challenge = status.challenge
    # Under offline evaluation, or passed it and about to start as the canary.
    admitted = challenge is not None and challenge.model == model
    if model and challenge is not None and admitted and challenge.phase in ("Running", "Passed"):
        return "Trained", f"{model}: offline evaluation {challenge.phase.lower()}"
    if view.training_outcome == "Failed":
        return "Failed", view.training_message or "the training failed"
    if view.training_outcome is None:
        return "Failed", f"BertTraining {record.training} is gone"
    if view.training_outcome != "Succeeded":
        return "Running", record.message
    if view.model_ready and status.canary_model is None and model != status.stable_model:
        return "NotSelected", (
            f"{model} is Ready but the selection policy did not pick it (check "
            "model.selector.minMacroF1 and the model's metrics)"
        )
    return "Trained", f"{model} registered" if model else "trained"


# -- waiting for feedback labels ----------------------------------------------------------------
# Drift is usually found long before the people labelling the drifted traffic caught up:
# a retraining started at once snapshots the few labels there are. So, with feedback in
# the dataset, a drifted check that may retrain first waits for retrain.minFeedbackRows
# NEW labels (counted by the gateway), for at most retrain.maxWaitSeconds, then starts
# with what exists. The guards (cooldown, maxRetrains) are judged when the drift is
# found, not again when the wait ends. Drift that disappears meanwhile does not end the
# wait: it was real when found, and the labels being collected are of that traffic.

RESET_SLACK = 0.5  # labels are whole: a count this much below the last one went down


def wants_labels(spec: api.BertDeploymentSpec) -> bool:
    """Whether a retraining waits for feedback first: the feedback is in its dataset, some
    labels are asked for, and some time is allowed to collect them."""
    policy = spec.retrain
    return policy.include_feedback and policy.min_feedback_rows > 0 and policy.max_wait_seconds > 0


def begin_wait(
    spec: api.BertDeploymentSpec, count: float | None, now: datetime
) -> api.RetrainWait | None:
    """The wait a drifted check that may retrain starts, or None: start right away.

    ``count``: the feedback labels the deployment's gateway accepted so far (cumulative),
    None when unknown. Unknown counts as 0, so every label reported later is new: a
    gateway that cannot be read is likely restarting, and its counter begins at 0 again.
    """
    if not wants_labels(spec):
        return None
    policy = spec.retrain
    wait = api.RetrainWait(
        since=now,
        baseline=count or 0.0,
        have=0,
        needed=policy.min_feedback_rows,
        deadline=now + timedelta(seconds=policy.max_wait_seconds),
    )
    return wait.model_copy(update={"message": wait_message(wait, now)})


def wait_message(wait: api.RetrainWait, now: datetime) -> str:
    """e.g. "retraining waits for feedback: 57 of 200 new labels, until 12:34Z"."""
    until = wait.deadline.strftime("%H:%MZ")
    if wait.deadline - now >= timedelta(hours=20):  # the time alone would be ambiguous
        until = wait.deadline.strftime("%Y-%m-%d %H:%MZ")
    return (
        f"retraining waits for feedback: {wait.have:.0f} of {wait.needed} new labels, until {until}"
    )


def counted(wait: api.RetrainWait, count: float | None) -> tuple[float, float]:
    """(baseline, have) after reading ``count``; ``have`` = count - baseline.

    Unknown (None): nothing changes. A count below the last one read (baseline + have)
    means the counter began again (a gateway restarted; with several replicas, one of
    them): the labels counted so far stay counted and the baseline moves so that ``have``
    grows with the count from here. The labels accepted between the last read and the
    restart are not counted, never more: a partial reset can delay a retraining (the
    deadline bounds that) but cannot start it early. After a reset the baseline may be
    below 0; it is the counter's value ``have`` counts from, no longer a count of labels.
    """
    if count is None:
        return wait.baseline, wait.have
    if count + RESET_SLACK < wait.baseline + wait.have:
        return count - wait.have, wait.have
    return wait.baseline, count - wait.baseline


@dataclass(frozen=True)
class WaitStep:
    """What a reconcile does with a retraining that waits for feedback labels."""

    action: Literal["wait", "start", "cancel"]
    wait: api.RetrainWait  # the record with the new count, needed and deadline
    message: str  # why it starts (for the Event and the retrain record), or is cancelled


def decide_wait(
    spec: api.BertDeploymentSpec, wait: api.RetrainWait, count: float | None, now: datetime
) -> WaitStep:
    """Keep waiting, start (enough new labels, or the deadline passed: with what exists),
    or cancel (the policy no longer retrains). ``needed`` and the deadline follow the
    current spec, so editing minFeedbackRows or maxWaitSeconds applies to a running wait
    (the deadline still counts from when the drift was found)."""
    policy = spec.retrain
    baseline, have = counted(wait, count)
    updated = wait.model_copy(
        update={
            "baseline": baseline,
            "have": max(have, 0.0),
            "needed": policy.min_feedback_rows,
            "deadline": wait.since + timedelta(seconds=policy.max_wait_seconds),
        }
    )
    updated = updated.model_copy(update={"message": wait_message(updated, now)})
    if not policy.enabled:
        return WaitStep("cancel", updated, "retrain.enabled is false: no longer waiting")
    if spec.model.selector is None:
        return WaitStep(
            "cancel", updated, "model.ref names a fixed model: no longer waiting to retrain"
        )
    got = f"{updated.have:.0f} of {updated.needed}"
    if not wants_labels(spec):
        return WaitStep("start", updated, f"no longer waiting for feedback ({got} new labels)")
    if updated.have >= updated.needed:
        return WaitStep(
            "start",
            updated,
            f"{updated.have:.0f} new feedback labels arrived ({updated.needed} needed)",
        )
    if now >= updated.deadline:
        return WaitStep(
            "start",
            updated,
            f"the wait for feedback ended at {updated.deadline:%H:%M:%SZ} with {got} new "
            "labels (retrain.maxWaitSeconds): retraining with what exists",
        )
    return WaitStep("wait", updated, updated.message or "")
