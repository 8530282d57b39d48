"""The retrain policy of a BertDeployment as pure functions: whether a drifted check may
start a retraining now (:func:`may_retrain`), and where a started one's chain stands
(:func:`follow_chain`: drift -> dataset -> training -> model -> rollout).

Called by :mod:`bertops.operator.deployment.monitor` after each drift result and at every
reconcile while a retraining is active; the builders of the objects a retraining creates
are in :mod:`bertops.operator.deployment.retrain`. No I/O here, so the guards are tested
table-driven (tests/operator/test_retrain_policy.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bertops.api import deployment as api

# Chain outcomes after which a retraining no longer counts as running.
ENDED = {"Failed", "Promoted", "RolledBack", "NotSelected"}


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
    Running -> Trained (the model is registered) -> Promoted / RolledBack (the rollout's
    history names the model) or NotSelected (the model is Ready, yet neither canary nor
    stable while no other rollout runs: the selection policy did not pick it)."""
    if record.outcome in ENDED:
        return record.outcome, record.message
    model = record.model
    if model and status.stable_model == model:
        return "Promoted", f"{model} is the stable model"
    for entry in reversed(status.history or []):
        if model and entry.model == model and entry.outcome in ("RolledBack", "Aborted"):
            return "RolledBack", entry.message
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
