"""The rollout's judgment, tick by tick: a step never ends while a gate is not yet sure
(the feedback gate the user asked for judges before promotion), the pause counts from
the moment the gateway carries the weight, the progress deadline reports (or aborts) a
starved step, looks that saw no new data spend no confidence, and a new model is scored
offline against stable before any traffic moves (champion/challenger)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from bertops.api import deployment as api
from bertops.api.meta import find_condition
from bertops.operator.rollout.metrics import Observations
from bertops.operator.rollout.state import Decision, decide
from tests.operator.rollout_builders import T0, Tick, deployment_spec, obs, run_ticks

START = [Tick(0, "v1"), Tick(10, "v2")]


def progressing(decision: Decision) -> tuple[str, str, str]:
    found = find_condition(decision.status.conditions, api.PROGRESSING)
    assert found is not None
    return str(found.status), found.reason, found.message or ""


def test_a_configured_feedback_gate_judges_before_promotion() -> None:
    """Finding 5: minFeedbackAccuracy 0.72 with minFeedback 30, one 30 s step; the canary
    was promoted with 24 labels. Now the step holds, says why, then decides."""
    spec = deployment_spec(((50, 30),), minFeedbackAccuracy=0.72, minFeedback=30)
    few = Observations(stable=obs(), canary=obs(feedback=(20, 24)))
    held = run_ticks(spec, [*START, Tick(50, "v2", few), Tick(400, "v2", few)])
    assert held[-1].status.canary_model == "v2"
    status, reason, message = progressing(held[-1])
    assert (status, reason) == ("True", api.REASON_WAITING_FOR_TRAFFIC)
    assert "feedbackAccuracy" in message and "24 of the 30" in message
    enough = Observations(stable=obs(), canary=obs(feedback=(190, 200)))
    done = run_ticks(spec, [*START, Tick(50, "v2", few), Tick(400, "v2", enough)])
    assert done[-1].status.stable_model == "v2"


def test_not_yet_sure_holds_and_says_how_many_more() -> None:
    spec = deployment_spec(((50, 30),), maxErrorRate=0.05)
    borderline = Observations(stable=None, canary=obs(requests=120, errors=5))
    decisions = run_ticks(spec, [*START, Tick(100, "v2", borderline)])
    status, reason, message = progressing(decisions[-1])
    assert (status, reason) == ("True", api.REASON_NOT_YET_SURE)
    assert "needs about" in message
    analysis = decisions[-1].status.analysis
    assert analysis is not None
    gate = analysis.gates[0]
    assert gate.result == "NotYetSure" and gate.needed and gate.lower is not None


def test_the_pause_counts_from_when_the_routes_carry_the_weight() -> None:
    spec = deployment_spec(((50, 30),))
    unrouted = [Tick(20, "v2", routed=False), Tick(60, "v2", routed=False)]
    decisions = run_ticks(spec, [*START, *unrouted, Tick(70, "v2"), Tick(95, "v2")])
    assert progressing(decisions[3])[1] == api.REASON_WAITING_FOR_ROUTES
    assert decisions[-1].status.canary_model == "v2"  # 25 s since routed at 70: pausing
    later = run_ticks(spec, [*START, *unrouted, Tick(70, "v2"), Tick(101, "v2")])
    assert later[-1].status.stable_model == "v2"


def test_a_starved_step_reports_its_deadline_once() -> None:
    spec = deployment_spec(((20, 30),))
    spec.rollout.progress_deadline_seconds = 120
    starved = Observations(stable=obs(), canary=None)
    ticks = [*START, Tick(60, "v2", starved), Tick(200, "v2", starved), Tick(230, "v2", starved)]
    decisions = run_ticks(spec, ticks)
    status, reason, message = progressing(decisions[-1])
    assert (status, reason) == ("False", api.REASON_PROGRESS_DEADLINE)
    assert "120s" in message and "canary requests" in message
    warnings = [e for d in decisions for e in d.events if e.reason == reason]
    assert len(warnings) == 1 and warnings[0].type == "Warning"
    assert decisions[-1].status.canary_model == "v2"  # reported, not aborted


def test_abort_on_deadline_rolls_the_canary_back() -> None:
    spec = deployment_spec(((20, 30),))
    spec.rollout.progress_deadline_seconds = 120
    spec.rollout.abort_on_deadline = True
    starved = Observations(stable=obs(), canary=None)
    decisions = run_ticks(spec, [*START, Tick(200, "v2", starved)])
    st = decisions[-1].status
    assert st.canary_model is None and st.rejected_model == "v2"
    assert st.history and st.history[-1].outcome == "Aborted"
    assert st.history[-1].message and "progressDeadlineSeconds" in st.history[-1].message


def test_looking_again_at_the_same_data_spends_nothing() -> None:
    spec = deployment_spec(((50, 600),))
    same = Observations(stable=obs(), canary=obs(requests=200))
    more = Observations(stable=obs(), canary=obs(requests=300))
    decisions = run_ticks(
        spec, [*START, Tick(40, "v2", same), Tick(70, "v2", same), Tick(100, "v2", more)]
    )
    looks = []
    for decision in decisions[2:]:
        assert decision.status.analysis is not None
        looks.append(decision.status.analysis.looks)
    assert looks == [1, 1, 2]


def challenge_spec() -> api.BertDeploymentSpec:
    return deployment_spec(((50, 30),), offlineEvaluation=True)


def step(
    spec: api.BertDeploymentSpec,
    status: api.BertDeploymentStatus,
    at: float,
    action: str | None = None,
) -> Decision:
    from bertops.operator.rollout.actions import parse_action

    return decide(
        spec,
        status,
        "v2",
        Observations(stable=obs(), canary=obs()),
        parse_action(action),
        T0 + timedelta(seconds=at),
        generation=1,
    )


def test_a_new_model_is_scored_offline_before_any_traffic() -> None:
    spec = challenge_spec()
    first = run_ticks(spec, [Tick(0, "v1"), Tick(10, "v2")])[-1]
    st = first.status
    assert st.canary_model is None and not st.canary_weight
    assert st.challenge is not None and (st.challenge.model, st.challenge.stable) == ("v2", "v1")
    assert st.challenge.phase == "Running"
    assert progressing(first)[:2] == ("Unknown", api.REASON_CHALLENGE_RUNNING)
    assert first.requeue_seconds is not None  # looks again while the step runs
    # The reconciler's evaluation step reports back: passed, and the canary starts.
    st.challenge = st.challenge.model_copy(update={"phase": "Passed"})
    assert step(spec, st, 20).status.canary_model == "v2"


def test_a_refused_model_gets_no_traffic_and_the_numbers_say_why() -> None:
    spec = challenge_spec()
    st = run_ticks(spec, [Tick(0, "v1"), Tick(10, "v2")])[-1].status
    scores = [
        api.ChallengeScore(set="testSplit", rows=300, stable=0.80, candidate=0.71),
        api.ChallengeScore(set="heldBackFeedback", rows=60, stable=0.70, candidate=0.75),
    ]
    assert st.challenge is not None
    st.challenge = st.challenge.model_copy(
        update={
            "phase": "Refused",
            "scores": scores,
            "message": "testSplit: 0.710 against stable's 0.800 (maxOfflineDrop 0.02)",
        }
    )
    refused = step(spec, st, 20)
    out = refused.status
    assert out.canary_model is None and out.rejected_model == "v2"
    assert out.history and out.history[-1].outcome == "Refused"
    assert out.history[-1].scores == scores
    degraded = find_condition(out.conditions, api.DEGRADED)
    assert degraded is not None and degraded.reason == api.REASON_CHALLENGE_REFUSED
    assert "0.710" in (degraded.message or "")
    assert [e.type for e in refused.events] == ["Warning"]
    # It stays refused on the next look; a person's retry lets it through.
    assert step(spec, out, 30).status.canary_model is None
    retried = step(spec, out, 40, action="retry/1").status
    assert retried.canary_model == "v2"
    assert retried.challenge is not None and "by hand" in (retried.challenge.message or "")


def shadow_spec() -> api.BertDeploymentSpec:
    spec = deployment_spec(((30, 30),))
    spec.rollout.shadow = True
    spec.rollout.shadow_seconds = 60
    return spec


def mirrored(**fields: Any) -> Observations:
    """The candidate answers mirrored requests only: its series are the shadow's."""
    shadow = replace(obs(**fields), paired_answers={("pos", "pos"): 90, ("neg", "pos"): 10})
    return Observations(stable=obs(), canary=None, shadow=shadow)


def test_a_shadow_phase_is_judged_before_any_user_traffic_moves() -> None:
    spec = shadow_spec()
    first = run_ticks(spec, [*START])[-1]
    assert first.status.shadowing and first.status.canary_weight == 0
    assert "shadow phase" in progressing(first)[2]
    during = run_ticks(spec, [*START, Tick(40, "v2", mirrored())])[-1]
    assert during.status.shadowing and during.status.canary_weight == 0
    assert during.status.analysis is not None
    gates = {g.name: g for g in during.status.analysis.gates}
    assert gates["agreement"].result == "Reported" and gates["agreement"].value == 0.9
    assert "neg->pos 10" in (gates["agreement"].message or "")
    after = run_ticks(spec, [*START, Tick(40, "v2", mirrored()), Tick(80, "v2", mirrored())])
    st = after[-1].status
    assert not st.shadowing and st.canary_weight == 30 and st.rollout_step == 0
    assert any("passed its shadow phase" in e.message for e in after[-1].events)


def test_a_failing_shadow_is_rolled_back_before_any_user_traffic() -> None:
    decisions = run_ticks(shadow_spec(), [*START, Tick(40, "v2", mirrored(errors=100))])
    st = decisions[-1].status
    assert st.canary_model is None and st.rejected_model == "v2"
    assert st.history and st.history[-1].outcome == "RolledBack"
    assert not any(d.status.canary_weight for d in decisions)  # no user traffic ever
