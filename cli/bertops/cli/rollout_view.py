"""What ``bertops rollout status`` says about a BertDeployment: the verdict (a phase and
the exit code CI gates on) and the rich rendering of stable, canary, weight, step, the
offline evaluation, the last analysis (each gate's estimate, interval and decision),
request counts and history.

Pure functions of the object as the API server returns it (a dict) and, for the counts,
of the per-variant observations read from the gateway's metrics; called by
:mod:`bertops.cli.rollout` for a one-off status, ``--timeout`` waits and the ``--watch``
view. The exit codes are documented in the README ("bertops rollout").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from bertops.api import deployment as api
from bertops.api.meta import ConditionStatus, find_condition

if TYPE_CHECKING:  # prometheus_client loads only when counts are read
    from bertops.operator.rollout.metrics import Observation, Observations

HEALTHY = 0  # serving a stable model, no canary, nothing rolled back
DEGRADED = 1  # a canary was rolled back or aborted (and is still selected), or no model serves
NOT_DONE = 2  # a canary in progress, paused or awaiting promotion; or not yet reconciled
NOT_FOUND = 3  # no such BertDeployment
UNREACHABLE = 4  # the API server could not be reached or refused the request
# Phases that wait for a person: `status --timeout` stops waiting on them at once.
NEEDS_A_PERSON = ("Paused", "AwaitingPromotion")


@dataclass(frozen=True)
class Verdict:
    phase: str  # Healthy, Degraded, RolledBack, Aborted, Progressing, Paused, ...
    code: int
    message: str

    @property
    def final(self) -> bool:
        """Nothing will change without a person (or a new model): stop waiting."""
        return self.code in (HEALTHY, DEGRADED) or self.phase in NEEDS_A_PERSON


def parse_status(body: dict[str, Any]) -> api.BertDeploymentStatus:
    return api.BertDeploymentStatus.model_validate(body.get("status") or {})


def _spec_paused(body: dict[str, Any]) -> bool:
    rollout = (body.get("spec") or {}).get("rollout") or {}
    return bool(rollout.get("paused"))


def steps_total(body: dict[str, Any]) -> int | None:
    rollout = (body.get("spec") or {}).get("rollout") or {}
    steps = rollout.get("steps")
    return len(steps) if isinstance(steps, list) else None  # None: the API's default


def verdict(body: dict[str, Any] | None) -> Verdict:
    """The rollout's phase and exit code, from its conditions and status fields."""
    if body is None:
        return Verdict("NotFound", NOT_FOUND, "no such BertDeployment")
    st = parse_status(body)
    generation = (body.get("metadata") or {}).get("generation")
    observed = st.observed_generation
    behind = observed is not None and isinstance(generation, int) and observed < generation
    if not st.conditions or behind:
        return Verdict("Pending", NOT_DONE, "the operator has not reconciled this generation yet")
    degraded = find_condition(st.conditions, api.DEGRADED)
    if degraded is not None and degraded.status == ConditionStatus.TRUE:
        # Only a failed gate sets Degraded=True; an abort by hand leaves it False.
        return Verdict("RolledBack", DEGRADED, f"{degraded.reason}: {degraded.message}")
    if st.canary_model is None and st.rejected_model:
        last = st.history[-1] if st.history else None
        outcome = last.outcome if last and last.model == st.rejected_model else "RolledBack"
        detail = last.message if last and last.message else f"{st.rejected_model} rejected"
        return Verdict(outcome, DEGRADED, detail)
    ready = find_condition(st.conditions, api.READY)
    if ready is None or ready.status != ConditionStatus.TRUE:
        why = f"{ready.reason}: {ready.message}" if ready else "no Ready condition"
        return Verdict("Degraded", DEGRADED, f"not serving ({why})")
    progressing = find_condition(st.conditions, api.PROGRESSING)
    moving = progressing is not None and progressing.status != ConditionStatus.FALSE
    if st.canary_model is None and not moving:
        return Verdict("Healthy", HEALTHY, f"serving {st.stable_model}")
    reason = progressing.reason if progressing else api.REASON_CANARY
    message = progressing.message if progressing else ""
    if st.paused_by_action or _spec_paused(body) or reason == api.REASON_PAUSED:
        return Verdict("Paused", NOT_DONE, message or "rollout paused")
    if reason == api.REASON_AWAITING_PROMOTION:
        return Verdict("AwaitingPromotion", NOT_DONE, message)
    return Verdict("Progressing", NOT_DONE, f"{reason}: {message}".rstrip(": "))


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


_STYLE = {
    "Healthy": "green",
    "Progressing": "cyan",
    "Pending": "cyan",
    "Paused": "yellow",
    "AwaitingPromotion": "yellow",
}


def summary(body: dict[str, Any], result: Verdict) -> Table:
    st = parse_status(body)
    meta = body.get("metadata") or {}
    total = steps_total(body)
    step = "-"
    if st.canary_model is not None and st.rollout_step is not None:
        shown = min(st.rollout_step + 1, total) if total else st.rollout_step + 1
        step = f"{shown}/{total if total is not None else '?'}"
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, RenderableType]] = [
        ("Name", f"{meta.get('namespace', '')}/{meta.get('name', '')}"),
        ("Status", Text(result.phase, style=_STYLE.get(result.phase, "red"))),
        ("Message", result.message),
        ("Stable", st.stable_model or "-"),
        ("Canary", st.canary_model or "-"),
        ("Weight", f"{st.canary_weight or 0}%"),
        ("Step", step),
        ("Endpoint", st.endpoint or "-"),
    ]
    if st.rejected_model:
        rows.append(("Rejected", st.rejected_model))
    for label, value in rows:
        grid.add_row(label, value)
    return grid


def _interval(gate: api.GateStatus) -> str:
    if gate.lower is None or gate.upper is None:
        return "-"
    level = f" at {gate.confidence:.1%}" if gate.confidence is not None else ""
    return f"[{_fmt(gate.lower)}, {_fmt(gate.upper)}]{level}"


def _samples(gate: api.GateStatus) -> str:
    seen = "-" if gate.samples is None else f"{gate.samples:.0f}"
    return f"{seen} (+{gate.needed})" if gate.needed else seen


def gates_table(st: api.BertDeploymentStatus) -> RenderableType:
    """Each gate's estimate, interval (with its confidence), bound and decision."""
    if st.analysis is None or not st.analysis.gates:
        return Text("Analysis: none yet", style="dim")
    results: list[str] = [g.result for g in st.analysis.gates]
    tally = ", ".join(
        f"{results.count(k)} {label}"
        for k, label in (
            ("Passed", "passed"),
            ("Failed", "failed"),
            ("NotYetSure", "not yet sure"),
            ("Reported", "reported"),
        )
        if results.count(k)
    )
    heading = Text(
        f"Analysis at {st.analysis.at:%Y-%m-%d %H:%M:%S} (look {st.analysis.looks}): {tally}",
        style="bold",
    )
    table = Table()
    for column in ("gate", "decision", "estimate", "interval", "bound", "n (+more)", "message"):
        table.add_column(column)
    colour = {"Passed": "green", "Failed": "red", "NotYetSure": "yellow", "Reported": "dim"}
    for gate in st.analysis.gates:
        table.add_row(
            gate.name,
            Text(gate.result, style=colour.get(gate.result, "yellow")),
            _fmt(gate.value),
            _interval(gate),
            _fmt(gate.threshold),
            _samples(gate),
            gate.message or "",
        )
    return Group(heading, table)


def challenge_table(st: api.BertDeploymentStatus) -> RenderableType:
    """The last offline evaluation: both models on each frozen set."""
    challenge = st.challenge
    if challenge is None:
        return Text("Offline evaluation: none yet", style="dim")
    heading = Text(
        f"Offline evaluation of {challenge.model} against {challenge.stable}: {challenge.phase}",
        style="bold",
    )
    table = Table()
    for column in ("set", "rows", "stable", "candidate"):
        table.add_column(column)
    for score in challenge.scores or []:
        table.add_row(score.set, str(score.rows), _fmt(score.stable, 3), _fmt(score.candidate, 3))
    return Group(heading, table, Text(challenge.message or "", style="dim"))


def counts_table(observations: Observations | None, error: str | None) -> RenderableType:
    """Requests, errors, p95 and confidence per variant, from the gateway's /metrics."""
    if observations is None:
        return Text(f"Counts: {error or 'no gateway endpoint yet'}", style="dim")
    heading = Text("Traffic through the gateway (since each model started)", style="bold")
    table = Table()
    columns = ("variant", "model", "requests", "errors", "p95 ms", "confidence", "feedback")
    for column in (*columns, "agrees with stable"):
        table.add_column(column)

    def row(variant: str, seen: Observation | None) -> None:
        if seen is None:
            return
        feedback = (
            f"{_fmt(seen.feedback_accuracy, 3)} of {seen.feedback_total:.0f}"
            if seen.feedback_total
            else "-"
        )
        table.add_row(
            variant,
            seen.model or "-",
            f"{seen.requests:.0f}",
            f"{seen.errors:.0f}",
            _fmt(seen.latency_p95_ms, 3),
            _fmt(seen.mean_confidence, 3),
            feedback,
            _fmt(seen.agreement, 3) + (f" of {seen.paired_total:.0f}" if seen.paired_total else ""),
        )

    row("stable", observations.stable)
    row("canary", observations.canary)
    row("shadow", observations.shadow)
    return Group(heading, table)


def history_table(st: api.BertDeploymentStatus, limit: int = 10) -> RenderableType:
    if not st.history:
        return Text("History: none", style="dim")
    outcomes: list[str] = [r.outcome for r in st.history]
    kinds = ("Promoted", "RolledBack", "Aborted", "Refused")
    tally = ", ".join(f"{outcomes.count(o)} {o}" for o in kinds if outcomes.count(o))
    heading = Text(f"History ({tally})", style="bold")
    table = Table()
    for column in ("at", "model", "outcome", "message"):
        table.add_column(column)
    for record in st.history[-limit:]:
        style = "green" if record.outcome == "Promoted" else "red"
        table.add_row(
            f"{record.at:%Y-%m-%d %H:%M:%S}",
            record.model,
            Text(record.outcome, style=style),
            record.message or "",
        )
    return Group(heading, table)


def render(
    body: dict[str, Any],
    result: Verdict,
    observations: Observations | None = None,
    counts_error: str | None = None,
) -> Group:
    """Everything `status` prints, as one renderable (printed once or inside rich Live)."""
    st = parse_status(body)
    return Group(
        summary(body, result),
        Text(""),
        challenge_table(st),
        Text(""),
        gates_table(st),
        Text(""),
        counts_table(observations, counts_error),
        Text(""),
        history_table(st),
    )
