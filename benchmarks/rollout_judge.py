"""Benchmark of the canary judge (not a test): how often do the rollout's analysis gates
roll back a canary as good as stable, how often do they catch a worse one, and after how
many canary requests? Run by hand, or by whoever changes ``bertops.operator.rollout.gates``
or ``stats``; about 2.5 minutes on 2 idle CPU cores at the defaults (270 CPU seconds,
nearly all in ``gates.evaluate``), a quarter of that with ``--quick``:

    .venv/bin/python benchmarks/rollout_judge.py [--quick] [--jobs 2] [--seed 0]

Seeded synthetic streams, no cluster: stable has ``--history`` requests already and keeps
serving; the canary gets ``--batch`` requests per look (stable the rest of the traffic at
``--weight`` percent), for at most ``--looks`` looks. Per request: an error (Bernoulli),
a latency (lognormal, counted into the gateway's ``LATENCY_BUCKETS``), a label (one of
three) unless it failed, and for a ``--labelled`` share of those a feedback label. The
canary's labelled texts are scored on both models (paired feedback: both right, only
the candidate, only stable, both wrong), drawn from each model's accuracy and the share
of texts on which both are right or both wrong.

Two judges see the same streams (the same seed per rollout):

- ``new``: :func:`bertops.operator.rollout.gates.evaluate` with the default Analysis; a
  look fails on any ``fail``, and a step may end only when no gating gate is ``unsure``;
- ``old``: the point estimates before the sequential gates (the baseline, kept here):
  once ``minRequests`` canary requests, fail on error rate > 0.05, p95 ratio > 1.5, JS
  distance of the labels > 0.2, or feedback accuracy < minFeedbackAccuracy when set;
  otherwise pass (an inconclusive gate never held a step).

A rollout has ``--steps`` steps of ``--pause`` looks (the defaults: 2 steps of 60 s at 30 s
looks): a step ends at the first look after its pause that the judge passes, the last
one promotes; a rollout still running after ``--looks`` looks is undecided. The core
(:func:`simulate`, :func:`run_rollout`) is importable, e.g. for a test.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from statistics import median
from typing import Any, Literal

import numpy as np
from rollout_judge_old import Judge, OldAnalysis, Verdict, old_judge  # the sibling module

from bertops.api.deployment import Analysis
from bertops.operator.rollout import gates, stats
from bertops.operator.rollout.metrics import PAIRED_OUTCOMES, Observation
from bertops.server.metrics import LATENCY_BUCKETS

LABELS = ("negative", "neutral", "positive")
BOUNDS = np.array([*LATENCY_BUCKETS, math.inf])
Result = Literal["rolled back", "promoted", "undecided"]
# A look's verdict and the gates behind it (those failing, or those still unsure).


@dataclass(frozen=True)
class Variant:
    """One model's behaviour on the traffic."""

    error_rate: float = 0.01
    latency_median_s: float = 0.030
    latency_sigma: float = 0.5  # lognormal: p95 about 2.3 x the median
    labels: tuple[float, ...] = (0.5, 0.3, 0.2)
    accuracy: float = 0.80


@dataclass(frozen=True)
class Scenario:
    name: str
    wanted: Result
    stable: Variant
    canary: Variant
    agreement: float  # share of labelled texts where both models are right or both wrong
    retrained: bool  # whether a retraining produced the canary (the paired gate judges)
    rollouts: int


@dataclass(frozen=True)
class Settings:
    looks: int = 100
    batch: int = 20  # canary requests per look
    weight: float = 25.0  # canary percent of the traffic
    history: int = 5000  # stable's requests before the canary starts
    labelled: float = 0.5  # share of answered requests that get a feedback label
    steps: int = 2
    pause: int = 2  # looks per step before it may end
    seed: int = 0

    @property
    def stable_batch(self) -> int:
        return round(self.batch * (100 - self.weight) / self.weight)


@dataclass(frozen=True)
class Outcome:
    result: Result
    requests: int  # canary requests when decided (or at the end)
    look: int
    gates: tuple[str, ...] = ()  # failing (rolled back) or unsure (undecided) at the end


def scenarios(rollouts_aa: int, rollouts: int) -> list[Scenario]:
    same, shifted = Variant(), Variant(accuracy=0.70)
    errors, worse = replace(same, error_rate=0.03), replace(same, accuracy=0.70)
    # JS distance 0.227 from stable's (0.5, 0.3, 0.2): a retrained model meant to differ.
    better = Variant(accuracy=0.78, labels=(0.28, 0.30, 0.42))
    back: Result = "rolled back"
    promoted: Result = "promoted"
    return [
        Scenario("A/A equal models", promoted, same, same, 0.90, True, rollouts_aa),
        Scenario("error rate 1% -> 3%", back, same, errors, 0.90, False, rollouts),
        Scenario("accuracy 0.80 -> 0.70, retrained", back, same, worse, 0.80, True, rollouts),
        Scenario(
            "better retrained 0.70 -> 0.78, shifted", promoted, shifted, better, 0.8, True, rollouts
        ),
    ]


def paired_probabilities(stable: float, candidate: float, agreement: float) -> np.ndarray:
    """P(both right, only candidate, only stable, both wrong) with the given accuracies
    and the share of agreeing outcomes (both right or both wrong)."""
    discordant = 1 - agreement
    candidate_only = (discordant + candidate - stable) / 2
    stable_only = (discordant - candidate + stable) / 2
    both_right = stable - stable_only
    probabilities = np.array([both_right, candidate_only, stable_only, 1 - discordant - both_right])
    if np.any(probabilities < -1e-12):
        raise ValueError(f"agreement {agreement} impossible with accuracies {stable}, {candidate}")
    return np.maximum(probabilities, 0.0)


@dataclass
class Counts:
    """One variant's cumulative counters, as the gateway's /metrics would hold them."""

    labelled: float  # share of answered requests that get a feedback label
    requests: int = 0
    errors: int = 0
    buckets: np.ndarray = field(default_factory=lambda: np.zeros(len(BOUNDS)))
    predictions: np.ndarray = field(default_factory=lambda: np.zeros(len(LABELS)))
    feedback_correct: int = 0
    feedback_total: int = 0
    paired: np.ndarray = field(default_factory=lambda: np.zeros(len(PAIRED_OUTCOMES)))

    def add(
        self, rng: np.random.Generator, model: Variant, n: int, pairs: np.ndarray | None
    ) -> None:
        """``n`` more requests; ``pairs`` (paired outcome probabilities) for a candidate."""
        errors = int(rng.binomial(n, model.error_rate))
        latencies = rng.lognormal(math.log(model.latency_median_s), model.latency_sigma, n)
        self.requests += n
        self.errors += errors
        self.buckets += np.bincount(np.searchsorted(BOUNDS, latencies), minlength=len(BOUNDS))
        answered = n - errors
        self.predictions += rng.multinomial(answered, model.labels)
        labelled = int(rng.binomial(answered, self.labelled))
        self.feedback_total += labelled
        if pairs is None:
            self.feedback_correct += int(rng.binomial(labelled, model.accuracy))
            return
        outcomes = rng.multinomial(labelled, pairs)
        self.paired += outcomes
        self.feedback_correct += int(outcomes[0] + outcomes[1])

    def observation(self) -> Observation:
        return Observation(
            requests=float(self.requests),
            errors=float(self.errors),
            latency_buckets=tuple(
                (float(b), float(c)) for b, c in zip(BOUNDS, self.buckets.cumsum(), strict=True)
            ),
            predictions={
                label: float(c) for label, c in zip(LABELS, self.predictions, strict=True)
            },
            feedback_correct=float(self.feedback_correct),
            feedback_total=float(self.feedback_total),
            paired_feedback={
                name: float(c) for name, c in zip(PAIRED_OUTCOMES, self.paired, strict=True)
            },
        )


def new_judge(analysis: Analysis, retrained: bool) -> Judge:
    """The gates under test, as the operator runs them: the look schedule of the
    sequential rule (``stats.next_look``: only a look may fail a gate), fail on any
    fail, unsure while a gating gate is unsure."""
    schedule: dict[str, Any] = {"looks": 0, "seen": None}

    def judge(
        canary: Observation, stable: Observation, analysis_number: int
    ) -> tuple[Verdict, tuple[str, ...]]:
        if analysis_number == 1:  # a new rollout
            schedule.update(looks=0, seen=None)
        look, counted = stats.next_look(
            schedule["looks"], schedule["seen"], canary.requests, analysis.min_requests
        )
        if counted:
            schedule.update(looks=look, seen=canary.requests)
        results = gates.evaluate(
            analysis, canary, stable, look=look, retrained=retrained, decisive=counted
        )
        order: tuple[Verdict, ...] = ("fail", "unsure")
        for verdict in order:
            names = tuple(g.name for g in results if g.verdict == verdict)
            if names:
                return verdict, names
        return "pass", ()

    return judge


def run_rollout(
    scenario: Scenario, settings: Settings, judge: Judge, seed: Sequence[int]
) -> Outcome:
    """One rollout: a look per batch until rolled back, promoted or out of looks. The
    draws do not depend on the judge, so two judges with one seed see the same stream."""
    rng = np.random.default_rng(seed)
    pairs = paired_probabilities(
        scenario.stable.accuracy, scenario.canary.accuracy, scenario.agreement
    )
    stable, canary = Counts(settings.labelled), Counts(settings.labelled)
    stable.add(rng, scenario.stable, settings.history, None)
    step, step_start = 0, 0
    holding: tuple[str, ...] = ()
    for look in range(1, settings.looks + 1):
        canary.add(rng, scenario.canary, settings.batch, pairs)
        stable.add(rng, scenario.stable, settings.stable_batch, None)
        verdict, holding = judge(canary.observation(), stable.observation(), look)
        if verdict == "fail":
            return Outcome("rolled back", canary.requests, look, holding)
        if verdict == "pass" and look - step_start >= settings.pause:
            step, step_start = step + 1, look
            if step >= settings.steps:
                return Outcome("promoted", canary.requests, look)
    return Outcome("undecided", canary.requests, settings.looks, holding)


def run_pair(scenario: Scenario, settings: Settings, index: int, rollout: int) -> list[Outcome]:
    """Rollout number ``rollout`` of a scenario, judged old and new on the same stream."""
    seed = [settings.seed, index, rollout]
    new = new_judge(Analysis(), scenario.retrained)
    return [
        run_rollout(scenario, settings, judge, seed) for judge in (old_judge(OldAnalysis()), new)
    ]


def simulate(
    scenario: Scenario, settings: Settings, index: int = 0, jobs: int = 1
) -> dict[str, list[Outcome]]:
    """All of a scenario's rollouts, by judge ("old", "new"); ``jobs`` processes."""
    work = partial(run_pair, scenario, settings, index)
    rollouts = range(scenario.rollouts)
    if jobs <= 1:
        pairs = list(map(work, rollouts))
    else:
        with ProcessPoolExecutor(jobs) as pool:
            pairs = list(
                pool.map(work, rollouts, chunksize=max(1, scenario.rollouts // (4 * jobs)))
            )
    return {"old": [p[0] for p in pairs], "new": [p[1] for p in pairs]}


def share(outcomes: list[Outcome], result: Result) -> float:
    return sum(o.result == result for o in outcomes) / max(1, len(outcomes))


def row(scenario: Scenario, judge: str, outcomes: list[Outcome]) -> str:
    n = len(outcomes)

    def cell(result: Result) -> str:
        count = sum(o.result == result for o in outcomes)
        return f"{count}/{n} ({count / max(1, n):.1%})"

    decided = [o.requests for o in outcomes if o.result != "undecided"]
    requests = f"{median(decided):.0f}" if decided else "-"
    return (
        f"| {scenario.name} (want: {scenario.wanted}) | {judge} | {cell('rolled back')} | "
        f"{cell('promoted')} | {cell('undecided')} | {requests} |"
    )


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def rows(results: list[tuple[Scenario, dict[str, list[Outcome]]]]) -> Iterator[str]:
    yield (
        "| scenario | judge | rolled back | promoted | undecided | "
        "median canary requests to decide |"
    )
    yield "|---|---|---|---|---|---|"
    for scenario, by_judge in results:
        for judge, outcomes in by_judge.items():
            yield row(scenario, judge, outcomes)


def reasons(results: list[tuple[Scenario, dict[str, list[Outcome]]]]) -> Iterator[str]:
    """Which gates rolled the canaries back, and which were still unsure at the end."""
    for scenario, by_judge in results:
        for judge, outcomes in by_judge.items():
            parts = []
            for result, what in (("rolled back", "failed"), ("undecided", "still unsure")):
                names = Counter(g for o in outcomes if o.result == result for g in o.gates)
                if names:
                    listed = ", ".join(f"{name} {count}" for name, count in names.most_common())
                    parts.append(f"{what}: {listed}")
            if parts:
                yield f"- {scenario.name}, {judge}: {'; '.join(parts)}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 rollouts per scenario")
    parser.add_argument("--rollouts-aa", type=int, default=500, help="A/A rollouts")
    parser.add_argument(
        "--rollouts", type=int, default=100, help="rollouts per A/B scenario (200: ~1.5 min more)"
    )
    for setting in fields(Settings):  # --looks, --batch, ... (see Settings)
        default = setting.default
        parser.add_argument(f"--{setting.name}", type=type(default), default=default)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if args.quick:
        args.rollouts_aa = args.rollouts = 50
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})
    started, results, times = time.monotonic(), [], []
    for index, scenario in enumerate(scenarios(args.rollouts_aa, args.rollouts)):
        begun = time.monotonic()
        results.append((scenario, simulate(scenario, settings, index, args.jobs)))
        times.append(f"{scenario.name} {time.monotonic() - begun:.0f} s")
        print(times[-1], file=sys.stderr, flush=True)
    wall, load = time.monotonic() - started, os.getloadavg()[0]
    print(
        f"\n{cpu_name()}, {args.jobs} processes, {wall:.0f} s wall ({'; '.join(times)}), "
        f"load average {load:.1f} on {os.cpu_count()} cpus at the end. Up to {settings.looks} "
        f"looks of {settings.batch} canary requests (weight {settings.weight:g}%, stable "
        f"{settings.stable_batch} per look after {settings.history}), {settings.labelled:.0%} "
        f"labelled, {settings.steps} steps of {settings.pause} looks, seed {settings.seed}; "
        f"Analysis defaults (new), minFeedbackAccuracy unset (old). {args.rollouts_aa} A/A "
        f"rollouts, {args.rollouts} per A/B scenario (--rollouts 200 for tighter shares: "
        "the new gates cost about 5 ms of CPU a look).\n"
    )
    print("\n".join(rows(results)))
    print(
        "\nGates behind the rollbacks and the undecided rollouts (a rollout may name several, "
        "or none when its last step's pause was still running):"
    )
    print("\n".join(reasons(results)))
    aa = results[0][1]
    print(
        f"\nA/A false-rollback rate (goal <= {Analysis().false_rollback_rate:.0%}): "
        f"old {share(aa['old'], 'rolled back'):.1%}, new {share(aa['new'], 'rolled back'):.1%}."
    )


if __name__ == "__main__":
    main()
