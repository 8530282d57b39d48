"""The canary rollout state machine of a BertDeployment as one pure function,
:func:`decide`: (spec, status, selected model, observations, manual action, now) ->
the next status, the events to post and when to look again.

Called by the BertDeployment reconciler after it selected a model
(:mod:`~bertops.operator.rollout.selection`), read the gateway's metrics
(:mod:`~bertops.operator.rollout.metrics`) and parsed the manual-action annotation
(:mod:`~bertops.operator.rollout.actions`); it then applies the status and builds the
servers and routes for ``status.stableModel``/``canaryModel``/``canaryWeight``.

The rules, in the order they are applied:

1. A manual action is applied once (see ``actions``): promote (the canary becomes stable
   now, whatever its gates say), abort (roll back, recorded Aborted), pause, resume,
   retry (forget a rejected model).
2. Selection. The first model goes straight to stable (there is no traffic to protect).
   A newly selected model starts a rollout at step 0 (an older canary is aborted as
   Superseded); selecting the stable model again aborts the canary. A model that was
   rolled back or aborted (``status.rejectedModel``) is not rolled out again until the
   selection moves away from it. While paused, no rollout starts. No steps: the new
   model replaces stable at once. Nothing selected: what is served stays.
3. Analysis of a running canary at every interval, paused or not (a pause stops
   advancing, never protecting). Any failed gate rolls back: weight 0, canary cleared,
   Degraded=True with the gate's reason, a Warning event, history RolledBack. Unreadable
   metrics hold the step (never advance blind).
4. A step advances when its pause has elapsed, no gate failed and the canary served at
   least ``minRequests`` requests; gates still inconclusive then (feedback that has not
   arrived, a stable side without enough traffic to compare) do not block. Until the
   canary has that traffic the step waits, however long its pause (WaitingForTraffic).
   After the last step: promote with ``autoPromote``, else hold at the last weight
   (``rolloutStep`` = number of steps, AwaitingPromotion) while analysis goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from bertops.api import deployment as api
from bertops.api.meta import ConditionStatus, find_condition, set_condition
from bertops.operator.planners.common import Event
from bertops.operator.rollout.actions import ANNOTATION, ManualAction
from bertops.operator.rollout.gates import GateResult, enough_traffic, evaluate
from bertops.operator.rollout.metrics import Observations

HISTORY_LIMIT = 20
ACTION_MEMORY = 10
UNKNOWN = ConditionStatus.UNKNOWN
Outcome = Literal["Promoted", "RolledBack", "Aborted"]


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

    @property
    def paused(self) -> bool:
        return self.spec.rollout.paused or bool(self.st.paused_by_action)

    @property
    def interval(self) -> float:
        return float(self.spec.rollout.analysis.interval_seconds)

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def record(self, model: str, outcome: Outcome, message: str) -> None:
        history = [
            *(self.st.history or []),
            api.RolloutRecord(model=model, outcome=outcome, at=self.now, message=message),
        ]
        self.st.history = history[-HISTORY_LIMIT:]

    def clear_canary(self) -> None:
        self.st.canary_model = None
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
        self.clear_canary()
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
        if not steps:
            previous = self.st.stable_model
            self.st.stable_model = model
            message = f"{model} replaced {previous} at once (no rollout steps)"
            self.record(model, "Promoted", message)
            self.event("Normal", api.REASON_PROMOTED, message)
            return
        self.st.canary_model = model
        self.st.rollout_step = 0
        self.st.canary_weight = steps[0].weight
        self.st.step_started_at = self.now
        self.st.analysis = None
        self.started = True
        self.requeue = min(self.interval, max(1.0, steps[0].pause_seconds))
        self.event(
            "Normal",
            api.REASON_CANARY,
            f"rolling out {model}: step 1/{len(steps)} "
            f"at {steps[0].weight}% against {self.st.stable_model}",
        )

    # -- the four phases ---------------------------------------------------------------

    def apply_action(self, action: ManualAction | None) -> None:
        handled = self.st.handled_actions or []
        if action is None or action.raw in handled:
            return
        # A short memory, not just the last value: an older value written back (say, by a
        # Git sync restoring an annotation) is not applied a second time.
        self.st.handled_actions = [*handled, action.raw][-ACTION_MEMORY:]
        canary = self.st.canary_model
        if action.action is None:
            self.event("Warning", api.REASON_INVALID_ACTION, action.error or "invalid")
        elif action.action == "promote" and canary:
            self.promote(f"promoted by hand ({ANNOTATION}={action.raw})")
        elif action.action == "abort" and canary:
            self.end_canary(
                "Aborted",
                api.REASON_ABORTED,
                f"{canary} aborted by hand ({ANNOTATION}={action.raw}); "
                f"serving {self.st.stable_model}",
                reject=True,
            )
        elif action.action == "pause" and not self.st.paused_by_action:
            self.st.paused_by_action = True
            self.event("Normal", api.REASON_PAUSED, f"rollout paused by hand ({action.raw})")
        elif action.action == "resume" and self.st.paused_by_action:
            self.st.paused_by_action = None
            self.event("Normal", api.REASON_RESUMED, f"rollout resumed by hand ({action.raw})")
        elif action.action == "retry" and self.st.rejected_model:
            self.event(
                "Normal",
                api.REASON_RETRY,
                f"{self.st.rejected_model} may be rolled out again ({action.raw})",
            )
            self.st.rejected_model = None
        else:
            self.event(
                "Warning",
                api.REASON_ACTION_IGNORED,
                f"{action.action} has nothing to act on now ({action.raw})",
            )

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
        if selected != st.stable_model and not self.paused:
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
        self.gates = evaluate(analysis, observations.canary, observations.stable)
        evidence = api.AnalysisStatus(at=self.now, gates=[_gate_status(g) for g in self.gates])
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
        self.advance(enough_traffic(analysis, observations.canary))

    def advance(self, traffic: bool) -> None:
        st, steps = self.st, self.spec.rollout.steps
        step = st.rollout_step or 0
        if step < len(steps):
            st.canary_weight = steps[step].weight  # follows an edited spec
        if self.paused:
            self.hold = (UNKNOWN, api.REASON_PAUSED, "rollout paused; analysis continues")
            return
        if step >= len(steps):
            self.finish(len(steps))
            return
        if not traffic:
            self.hold = (
                ConditionStatus.TRUE,
                api.REASON_WAITING_FOR_TRAFFIC,
                f"step {step + 1}/{len(steps)} at {st.canary_weight}% waits for "
                f"{self.spec.rollout.analysis.min_requests} canary requests",
            )
            return
        started = st.step_started_at or self.now
        remaining = steps[step].pause_seconds - (self.now - started).total_seconds()
        if remaining > 0:
            self.requeue = min(self.interval, max(1.0, remaining))
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


def _gate_status(gate: GateResult) -> api.GateStatus:
    result = "Inconclusive" if gate.passed is None else "Passed" if gate.passed else "Failed"
    return api.GateStatus(
        name=gate.name,
        result=result,
        value=gate.value,
        threshold=gate.threshold,
        message=gate.message,
    )


def _conditions(run: _Run, selected: str | None, message: str, generation: int | None) -> None:
    st, now = run.st, run.now
    conditions = st.conditions

    def put(type_: str, status: ConditionStatus | bool, reason: str, text: str) -> None:
        set_condition(conditions, type_, status, reason, text, now=now, generation=generation)

    if st.stable_model:
        canary = f"; canary {st.canary_model} at {st.canary_weight}%" if st.canary_model else ""
        put(api.READY, True, api.REASON_SERVING, f"serving {st.stable_model}{canary}")
    else:
        put(api.READY, False, api.REASON_NO_MODEL, message or "no model selected")
    if st.canary_model:
        step, total = (st.rollout_step or 0) + 1, len(run.spec.rollout.steps)
        put(
            api.PROGRESSING,
            *(
                run.hold
                or (
                    ConditionStatus.TRUE,
                    api.REASON_CANARY,
                    f"{st.canary_model} step {min(step, total)}/{total} at {st.canary_weight}%",
                )
            ),
        )
    elif run.paused and selected and selected not in (st.stable_model, st.rejected_model):
        put(api.PROGRESSING, UNKNOWN, api.REASON_PAUSED, f"{selected} waits: rollout paused")
    else:
        last = st.history[-1] if st.history else None
        idle = api.REASON_SERVING if st.stable_model else api.REASON_NO_MODEL
        reason = last.outcome if last else idle
        text = f"no rollout in progress; last: {last.message}" if last else "no rollout"
        put(api.PROGRESSING, False, reason, text)
    if st.canary_model:
        put(api.DEGRADED, False, api.REASON_CANARY, "")
    elif run.degraded is not None:
        put(api.DEGRADED, *run.degraded)
    elif not (st.rejected_model and find_condition(conditions, api.DEGRADED)):
        put(api.DEGRADED, False, api.REASON_SERVING, "")
    # else: a rejected canary keeps the Degraded condition its rollback (or abort) set,
    # until the selection moves on.


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
) -> Decision:
    """The next rollout status; ``status`` is not modified."""
    run = _Run(spec, status.model_copy(deep=True), now)
    run.apply_action(manual_action)
    run.follow(selected)
    run.analyze(observations)
    _conditions(run, selected, selection_message, generation)
    if run.st.canary_model is None:
        run.requeue = None
    elif run.requeue is None:
        run.requeue = run.interval
    changed = run.st.model_dump() != status.model_dump()
    return Decision(run.st, run.events, run.requeue, run.gates, changed)
