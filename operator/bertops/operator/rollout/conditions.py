"""The rollout's conditions and gate evidence as a person reads them: Ready,
Progressing (with the reason a step holds) and Degraded, and each gate's estimate,
interval and decision for ``status.analysis``.

Called by :func:`bertops.operator.rollout.state.decide` at the end of every call; pure
(the condition helpers set ``lastTransitionTime`` only when a condition changes).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from bertops.api import deployment as api
from bertops.api.meta import ConditionStatus, find_condition, set_condition
from bertops.operator.rollout.gates import GateResult

UNKNOWN = ConditionStatus.UNKNOWN
VERDICT_RESULTS = {"pass": "Passed", "fail": "Failed", "unsure": "NotYetSure", "report": "Reported"}


class RunView(Protocol):
    """What the conditions read of one ``decide`` call."""

    spec: api.BertDeploymentSpec
    st: api.BertDeploymentStatus
    now: datetime
    hold: tuple[ConditionStatus, str, str] | None
    degraded: tuple[bool, str, str] | None

    @property
    def paused(self) -> bool: ...


def gate_status(gate: GateResult) -> api.GateStatus:
    return api.GateStatus(
        name=gate.name,
        result=VERDICT_RESULTS[gate.verdict],
        value=gate.value,
        lower=gate.lower,
        upper=gate.upper,
        confidence=gate.level,
        threshold=gate.threshold,
        samples=gate.samples,
        needed=gate.needed,
        message=gate.message,
    )


def write_conditions(
    run: RunView, selected: str | None, message: str, generation: int | None
) -> None:
    """Ready, Progressing and Degraded from the run's status, hold and transitions."""
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
        where = (
            "in its shadow phase (mirrored requests only)"
            if st.shadowing
            else f"step {min(step, total)}/{total} at {st.canary_weight}%"
        )
        put(
            api.PROGRESSING,
            *(
                run.hold
                or (
                    ConditionStatus.TRUE,
                    api.REASON_CANARY,
                    f"{st.canary_model} {where}",
                )
            ),
        )
    elif run.hold is not None:  # a new model's offline evaluation
        put(api.PROGRESSING, *run.hold)
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
