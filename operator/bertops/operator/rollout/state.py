"""The canary rollout state machine of a BertDeployment as one pure function,
:func:`decide`: (spec, status, selected model, observations, manual action, routed, now)
-> the next status, the events to post and when to look again. Called by the reconciler
(:mod:`bertops.operator.deployment.reconciler`), which then serves what it decided.

The rules, in the order they are applied:

1. A manual action is applied once (:func:`~bertops.operator.rollout.actions.apply_action`).
2. Selection. The first model goes straight to stable. A newly selected model is scored
   offline against stable first (:func:`~bertops.operator.rollout.challenge.admitted`);
   once it passes, a rollout starts (an older canary is aborted as Superseded), with a
   shadow phase first when ``rollout.shadow``. Selecting the stable model again aborts
   the canary. A rejected model (``status.rejectedModel``) is not rolled out again until
   the selection moves away from it. While paused, no rollout starts. No steps: the new
   model replaces stable at once. Nothing selected: what is served stays.
3. Analysis at every interval, paused or not (a pause stops advancing, never
   protecting): the gates (:mod:`.gates`) on the canary's (or the shadow's) series, at
   the look of the sequential rule. A failed gate rolls back (weight 0, Degraded=True with
   its reason, a Warning, history RolledBack). Unreadable metrics hold the step.
4. A step (or the shadow phase) starts when the gateway carries it (``routed``) and ends
   when its pause has elapsed and no gating gate is not yet sure (WaitingForTraffic,
   NotYetSure hold it). Held past ``progressDeadlineSeconds``: ProgressDeadlineExceeded,
   and with ``abortOnDeadline`` aborted. After the last step: promote with
   ``autoPromote``, else hold at the last weight (AwaitingPromotion).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from bertops.api import deployment as api
from bertops.api.meta import ConditionStatus, find_condition
from bertops.operator.objects import Event
from bertops.operator.rollout.actions import ANNOTATION, ManualAction, apply_action
from bertops.operator.rollout.challenge import admitted
from bertops.operator.rollout.conditions import gate_status, write_conditions
from bertops.operator.rollout.gates import GateResult, evaluate
from bertops.operator.rollout.metrics import Observation, Observations
from bertops.operator.rollout.stats import next_look

HISTORY_LIMIT = 20
UNKNOWN = ConditionStatus.UNKNOWN
Outcome = Literal["Promoted", "RolledBack", "Aborted", "Refused"]


@dataclass(frozen=True)
class Decision:
    status: api.BertDeploymentStatus
    events: list[Event]
    requeue_seconds: float | None  # None: nothing to wait for (no canary)
    gates: list[GateResult]
    changed: bool


@dataclass
class _Run:
    """One call of decide: the status being built and what happened on the way."""

    spec: api.BertDeploymentSpec
    st: api.BertDeploymentStatus
    now: datetime
    events: list[Event] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    hold: tuple[ConditionStatus, str, str] | None = None  # Progressing while a canary runs
    requeue: float | None = None
    degraded: tuple[bool, str, str] | None = None  # set by a transition in this call
    started: bool = False
    routed: bool = True  # the gateway carries status's canary at its weight

    @property
    def paused(self) -> bool:
        return self.spec.rollout.paused or bool(self.st.paused_by_action)

    @property
    def interval(self) -> float:
        return float(self.spec.rollout.analysis.interval_seconds)

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def record(
        self,
        model: str,
        outcome: Outcome,
        message: str,
        scores: list[api.ChallengeScore] | None = None,
    ) -> None:
        entry = api.RolloutRecord(
            model=model, outcome=outcome, at=self.now, message=message, scores=scores
        )
        history = [*(self.st.history or []), entry]
        self.st.history = history[-HISTORY_LIMIT:]

    def clear_canary(self) -> None:
        self.st.canary_model = None
        self.st.shadowing = None
        self.st.canary_weight = 0
        self.st.rollout_step = None
        self.st.step_started_at = None
        self.st.analysis = None

    # -- transitions -------------------------------------------------------------------

    def promote(self, why: str) -> None:
        canary = self.st.canary_model
        assert canary is not None
        previous = self.st.stable_model
        self.st.stable_model = canary
        evidence = self.st.analysis
        self.clear_canary()
        self.st.analysis = evidence  # kept: the analysis it was promoted on
        message = f"{canary} replaced {previous} as stable: {why}"
        self.record(canary, "Promoted", message)
        self.event("Normal", api.REASON_PROMOTED, message)
        self.degraded = (False, api.REASON_PROMOTED, "")

    def end_canary(self, outcome: Outcome, reason: str, message: str, *, reject: bool) -> None:
        canary = self.st.canary_model
        assert canary is not None
        self.clear_canary()
        if reject:
            self.st.rejected_model = canary
        self.record(canary, outcome, message)
        failed = outcome == "RolledBack"
        self.event("Warning" if failed else "Normal", reason, message)
        self.degraded = (failed, reason, message if failed else "")

    def start(self, model: str) -> None:
        steps = self.spec.rollout.steps
        if self.spec.rollout.shadow:
            self.st.shadowing = True
            self.begin(model, 0, self.spec.rollout.shadow_seconds)
            self.event(
                "Normal",
                api.REASON_CANARY,
                f"shadowing {model}: it answers mirrored requests, compared with "
                f"{self.st.stable_model}'s answers, before any user traffic moves",
            )
            return
        if not steps:
            previous = self.st.stable_model
            self.st.stable_model = model
            message = f"{model} replaced {previous} at once (no rollout steps)"
            self.record(model, "Promoted", message)
            self.event("Normal", api.REASON_PROMOTED, message)
            return
        self.begin(model, steps[0].weight, steps[0].pause_seconds)
        self.event(
            "Normal",
            api.REASON_CANARY,
            f"rolling out {model}: step 1/{len(steps)} "
            f"at {steps[0].weight}% against {self.st.stable_model}",
        )

    def begin(self, model: str, weight: int, pause: int) -> None:
        self.st.canary_model = model
        self.st.rollout_step = 0
        self.st.canary_weight = weight
        self.st.step_started_at = self.now
        self.st.analysis = None
        self.started = True
        self.requeue = min(self.interval, max(1.0, pause))

    # -- the four phases ---------------------------------------------------------------

    def follow(self, selected: str | None) -> None:
        st = self.st
        if selected is None:
            return  # nothing qualifies (or the list was empty): keep serving what we have
        if st.rejected_model and selected != st.rejected_model:
            st.rejected_model = None  # the selection moved: the rejection is spent
        if selected in (st.rejected_model, st.canary_model):
            return
        if st.stable_model is None:
            st.stable_model = selected
            st.canary_weight = 0
            self.event("Normal", api.REASON_SERVING, f"serving {selected} (first model)")
            return
        if st.canary_model is not None:
            back = selected == st.stable_model
            why = f"selection went back to {selected}" if back else f"superseded by {selected}"
            self.end_canary(
                "Aborted", api.REASON_SUPERSEDED, f"{st.canary_model} {why}", reject=False
            )
        if selected != st.stable_model and not self.paused and admitted(self, selected):
            self.start(selected)

    def analyze(self, observations: Observations | None) -> None:
        st = self.st
        if st.canary_model is None or self.started:
            return
        self.requeue = self.interval
        if observations is None:
            self.hold = (
                ConditionStatus.TRUE,
                api.REASON_METRICS_UNAVAILABLE,
                "canary metrics could not be read; holding the step",
            )
            return
        analysis = self.spec.rollout.analysis
        # In the shadow phase the candidate's answers are the mirrored ones.
        candidate = observations.shadow if st.shadowing else observations.canary
        look, counted, seen = self.look(candidate)
        self.gates = evaluate(
            analysis,
            candidate,
            observations.stable,
            look=look,
            retrained=self.retrained(st.canary_model),
            decisive=counted,
        )
        evidence = api.AnalysisStatus(
            at=self.now,
            looks=look if seen is not None else 0,
            seen_requests=seen,
            gates=[gate_status(g) for g in self.gates],
        )
        st.analysis = evidence
        failed = [g for g in self.gates if g.failed]
        if failed:
            detail = "; ".join(f"{g.name}: {g.message}" for g in failed)
            self.end_canary(
                "RolledBack",
                failed[0].reason,
                f"rolled back {st.canary_model}: {detail}; serving {st.stable_model}",
                reject=True,
            )
            st.analysis = evidence  # kept after the rollback: it says why
            return
        self.advance([g for g in self.gates if g.unsure])

    def look(self, candidate: Observation | None) -> tuple[int, bool, float | None]:
        """(look number, whether this analysis is a look, the requests it was taken at)
        for the sequential rule (:func:`~bertops.operator.rollout.stats.next_look`)."""
        previous = self.st.analysis
        looks = previous.looks if previous is not None else 0
        seen = previous.seen_requests if previous is not None else None
        requests = candidate.requests if candidate else 0.0
        minimum = self.spec.rollout.analysis.min_requests
        number, counted = next_look(looks, seen, requests, minimum)
        return number, counted, requests if counted else seen

    def retrained(self, model: str) -> bool:
        """Whether a retraining of this deployment produced ``model``."""
        history = self.st.retrains.history if self.st.retrains else None
        return any(record.model == model for record in history or [])

    def advance(self, unsure: list[GateResult]) -> None:
        st, steps = self.st, self.spec.rollout.steps
        step = st.rollout_step or 0
        if step < len(steps) and not st.shadowing:
            st.canary_weight = steps[step].weight  # follows an edited spec
        if self.paused:
            self.hold = (UNKNOWN, api.REASON_PAUSED, "rollout paused; analysis continues")
            return
        if step >= len(steps) and not st.shadowing:
            self.finish(len(steps))
            return
        if st.shadowing:
            where, pause = "the shadow phase", self.spec.rollout.shadow_seconds
        else:
            where = f"step {step + 1}/{len(steps)} at {st.canary_weight}%"
            pause = steps[step].pause_seconds
        if not self.waited(where, pause, unsure):
            return
        if st.shadowing:
            self.end_shadow()
            return
        step += 1
        st.rollout_step = step
        st.step_started_at = self.now
        if step < len(steps):
            st.canary_weight = steps[step].weight
            self.requeue = min(self.interval, max(1.0, steps[step].pause_seconds))
            self.event(
                "Normal",
                api.REASON_STEP_ADVANCED,
                f"{st.canary_model}: step {step + 1}/{len(steps)} at {st.canary_weight}%",
            )
            return
        self.finish(len(steps), just_finished=True)

    def waited(self, where: str, pause: int, unsure: list[GateResult]) -> bool:
        """Whether the step (or shadow phase) may end now: the gateway carries it, no
        gating gate is not yet sure, and its pause has elapsed since it was carried."""
        st = self.st
        if not self.routed:
            # The pause counts from the first look that finds the gateway carrying the
            # step: until then it has not started.
            st.step_started_at = None
            self.hold = (
                ConditionStatus.TRUE,
                api.REASON_WAITING_FOR_ROUTES,
                f"{where} waits for the gateway to carry it",
            )
            return False
        if st.step_started_at is None:
            st.step_started_at = self.now
        if unsure:
            traffic = all(g.value is None for g in unsure)
            detail = "; ".join(f"{g.name}: {g.message}" for g in unsure)
            reason = api.REASON_WAITING_FOR_TRAFFIC if traffic else api.REASON_NOT_YET_SURE
            self.hold = (ConditionStatus.TRUE, reason, f"{where} holds: {detail}")
            self.deadline(where)
            return False
        remaining = pause - (self.now - st.step_started_at).total_seconds()
        if remaining > 0:
            self.requeue = min(self.interval, max(1.0, remaining))
            return False
        return True

    def end_shadow(self) -> None:
        """The shadow phase passed: user traffic moves (step 1), or, without steps, the
        model replaces stable. The look count goes on (the false-rollback budget is one
        for the whole rollout); the canary's own traffic starts a new sample."""
        st, steps = self.st, self.spec.rollout.steps
        st.shadowing = None
        judged = "; ".join(f"{g.name} {g.verdict}" for g in self.gates)
        if not steps:
            self.promote(f"passed its shadow phase ({judged}); no rollout steps")
            return
        st.canary_weight = steps[0].weight
        st.step_started_at = None
        if st.analysis is not None:
            st.analysis = st.analysis.model_copy(update={"seen_requests": None})
        self.requeue = min(self.interval, max(1.0, steps[0].pause_seconds))
        self.event(
            "Normal",
            api.REASON_STEP_ADVANCED,
            f"{st.canary_model} passed its shadow phase ({judged}): "
            f"step 1/{len(steps)} at {st.canary_weight}%",
        )

    def deadline(self, where: str) -> None:
        """A step held past rollout.progressDeadlineSeconds: Progressing=False with why,
        and with abortOnDeadline the canary is rolled back."""
        limit = self.spec.rollout.progress_deadline_seconds
        started = self.st.step_started_at
        if limit is None or started is None or (self.now - started).total_seconds() < limit:
            return
        assert self.hold is not None
        why = f"{where} made no progress in {limit}s (rollout.progressDeadlineSeconds): "
        message = why + self.hold[2].split(" holds: ", 1)[-1]
        if self.spec.rollout.abort_on_deadline:
            self.end_canary(
                "Aborted",
                api.REASON_PROGRESS_DEADLINE,
                f"{message}; serving {self.st.stable_model}",
                reject=True,
            )
            self.hold = None
            return
        before = find_condition(self.st.conditions, api.PROGRESSING)
        if before is None or before.reason != api.REASON_PROGRESS_DEADLINE:
            self.event("Warning", api.REASON_PROGRESS_DEADLINE, message)
        self.hold = (ConditionStatus.FALSE, api.REASON_PROGRESS_DEADLINE, message)

    def finish(self, total: int, just_finished: bool = False) -> None:
        if self.spec.rollout.auto_promote:
            self.promote(f"all {total} steps passed their analysis")
            return
        message = (
            f"all {total} steps passed; promote with kubectl annotate --overwrite "
            f"{ANNOTATION}=promote/<nonce>"
        )
        self.hold = (UNKNOWN, api.REASON_AWAITING_PROMOTION, message)
        if just_finished:
            self.event("Normal", api.REASON_AWAITING_PROMOTION, message)


def decide(
    spec: api.BertDeploymentSpec,
    status: api.BertDeploymentStatus,
    selected: str | None,
    observations: Observations | None,
    manual_action: ManualAction | None,
    now: datetime,
    *,
    generation: int | None = None,
    selection_message: str = "",
    routed: bool = True,
) -> Decision:
    """The next rollout status; ``status`` is not modified. ``routed``: whether the
    gateway carries ``status``'s canary at its weight (a step's pause counts from then)."""
    run = _Run(spec, status.model_copy(deep=True), now, routed=routed)
    apply_action(run, manual_action)
    run.follow(selected)
    run.analyze(observations)
    write_conditions(run, selected, selection_message, generation)
    evaluating = run.st.challenge is not None and run.st.challenge.phase == "Running"
    if run.st.canary_model is None and not evaluating:
        run.requeue = None
    elif run.requeue is None:
        run.requeue = run.interval
    changed = run.st.model_dump() != status.model_dump()
    return Decision(run.st, run.events, run.requeue, run.gates, changed)
