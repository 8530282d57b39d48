"""The closed loop of ``make demo``, once the first model serves: normal traffic (no
drift), then shifted traffic with feedback labels, and the operator on its own finds
the drift, retrains on the original data plus the feedback, rolls the new model out as a
canary and promotes it. Ends with the accuracy on the shifted data before and after,
and an HTML report (with a PNG of its first page).

Called by :func:`bertops.cluster.demo.run` after :mod:`.demo_deploy`'s serving stage.
Everything goes through the gateway (loopback) and ``kubectl``; each wait is bounded and
a timeout says what was missing. The timeline prints one line per change of state.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertops.cluster import demo_report
from bertops.cluster.demo_data import DemoData, read_labelled
from bertops.cluster.demo_timeline import Kubectl, Timeline
from bertops.cluster.demo_traffic import Gateway, Record

NAME = "sentiment"


@dataclass
class LoopResult:
    records: list[Record] = field(default_factory=list)
    accuracy: dict[str, float] = field(default_factory=dict)
    report: Path | None = None
    screenshot: Path | None = None
    failure: str = ""


def deployment(kubectl: Kubectl) -> dict[str, Any]:
    text = kubectl("get", "bertdeployment", NAME, "-o", "json", "--ignore-not-found")
    return json.loads(text) if text.strip() else {}


def status(kubectl: Kubectl) -> dict[str, Any]:
    return deployment(kubectl).get("status") or {}


def drifted(kubectl: Kubectl) -> dict[str, Any]:
    for condition in (deployment(kubectl).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Drifted":
            return dict(condition)
    return {}


class Background:
    """Labelled traffic in a thread while the timeline watches: the canary's analysis
    needs requests on both sides, and a retrained canary is judged on feedback scored on
    both models (paired accuracy). Until ``judging()`` says a canary runs, the texts are
    the shifted stream's (their labels may still go into the retraining); from then on,
    the held-out evaluation texts, which the retrained model never saw, so the paired
    judgment is not flattered. Stops after 10,000 requests or when told."""

    def __init__(
        self,
        gateway: Gateway,
        stream: tuple[list[str], list[str]],
        held_out: tuple[list[str], list[str]],
        judging: Callable[[], bool],
        phase: str,
    ) -> None:
        self.records: list[Record] = []
        self._stop = threading.Event()

        def run() -> None:
            for start in range(0, 10_000, 40):  # bounded: at most 10,000 requests
                if self._stop.is_set():
                    return
                texts, labels = held_out if judging() else stream
                chunk = [texts[(start + i) % len(texts)] for i in range(40)]
                truth = [labels[(start + i) % len(labels)] for i in range(40)]
                self.records += gateway.send(
                    chunk, truth, feedback=True, phase=phase, rate=8, concurrency=2
                )

        self._thread = threading.Thread(target=run, name="demo-traffic", daemon=True)
        self._thread.start()

    def stop(self) -> list[Record]:
        self._stop.set()
        self._thread.join(120)
        return self.records


def evaluate(gateway: Gateway, data: DemoData, phase: str) -> tuple[list[Record], float]:
    """The shifted evaluation set through the gateway (no feedback): accuracy of what
    answers now."""
    texts, labels = read_labelled(data.shifted_eval)
    records = gateway.send(texts, labels, feedback=False, phase=phase, rate=20)
    judged = [r.correct for r in records if r.correct is not None]
    return records, (sum(judged) / len(judged) if judged else float("nan"))


def run_loop(
    kubectl: Kubectl,
    gateway: Gateway,
    data: DemoData,
    home: Path,
    say: Callable[[str], None],
    started: float,
    timeline: Timeline,
    timeout: float = 1500,
    local_path: Callable[[str], Path] = Path,
) -> LoopResult:
    """Stages 7-9 (``timeline``: the one the earlier stages printed); the report is
    written whatever happens, so a failed run shows why. ``local_path`` maps an artifact
    URI to where this machine sees it (the node demo's URIs are paths inside pods)."""
    result = LoopResult()
    try:
        _stages(kubectl, gateway, data, say, timeline, result, timeout)
    finally:
        result.report = _report(home, timeline, result, started, say, local_path)
    return result


def _stages(
    kubectl: Kubectl,
    gateway: Gateway,
    data: DemoData,
    say: Callable[[str], None],
    timeline: Timeline,
    result: LoopResult,
    timeout: float,
) -> None:
    stable = status(kubectl).get("stableModel")
    say(f"7/9 normal traffic: 150 airline tweets through the gateway ({stable} serves)")
    texts, labels = read_labelled(data.in_domain_stream)
    result.records += gateway.send(texts, labels, feedback=False, phase="normal")
    checked = status(kubectl).get("drift", {}).get("lastCheck")
    timeline.watch(
        lambda: status(kubectl).get("drift", {}).get("lastCheck") not in (None, checked),
        timeout=180,
    )
    say(f"   drift check on normal traffic: {drifted(kubectl).get('message', '?')}")

    say("8/9 shifted traffic: technology tweets, each answer labelled by POST /feedback")
    before, accuracy = evaluate(gateway, data, "eval-before")
    result.records += before
    result.accuracy[f"before: {stable}"] = accuracy
    say(f"   accuracy of {stable} on the shifted evaluation set: {accuracy:.3f}")
    texts, labels = read_labelled(data.shifted_stream)
    shifted = gateway.send(texts, labels, feedback=True, phase="shifted", rate=15)
    result.records += shifted
    accepted = sum(r.feedback == "accepted" for r in shifted)
    say(f"   {len(shifted)} shifted requests, {accepted} feedback labels accepted")

    say("9/9 watching the operator: drift -> retraining -> canary -> promotion")
    background = Background(
        gateway,
        (texts, labels),
        read_labelled(data.shifted_eval),
        lambda: bool(status(kubectl).get("canaryModel")),
        "rollout",
    )
    try:
        promoted = timeline.watch(lambda: _promoted(kubectl, stable), timeout=timeout)
    finally:
        result.records += background.stop()
    if not promoted:
        result.failure = f"no retrained model was promoted within {timeout:.0f}s"
        return
    new = status(kubectl).get("stableModel")
    after, accuracy = evaluate(gateway, data, "eval-after")
    result.records += after
    result.accuracy[f"after: {new}"] = accuracy
    say(f"   accuracy of {new} on the shifted evaluation set: {accuracy:.3f}")


def _promoted(kubectl: Kubectl, old: str | None) -> bool:
    current = status(kubectl)
    history = (current.get("retrains") or {}).get("history") or []
    return (
        bool(history)
        and history[-1].get("outcome") == "Promoted"
        and (current.get("stableModel") != old)
    )


def _report(
    home: Path,
    timeline: Timeline,
    result: LoopResult,
    started: float,
    say: Callable[[str], None],
    local_path: Callable[[str], Path],
) -> Path:
    histories = {}
    for body in json.loads(timeline.kubectl("get", "bertmodels", "-o", "json")).get("items", []):
        uri = (body.get("status") or {}).get("artifactUri")
        if uri and (body.get("spec") or {}).get("trainingRef"):
            # An object store's URI is read as it is; a path through local_path.
            history = demo_report.training_history(uri if "://" in uri else local_path(uri))
            if history:
                histories[body["metadata"]["name"]] = history
    threshold = (deployment(timeline.kubectl).get("spec") or {}).get("drift", {}).get("threshold")
    path = demo_report.write_report(
        home / "report.html",
        timeline=timeline.lines,
        total_seconds=time.monotonic() - started,
        series=timeline.series,
        records=result.records,
        histories=histories,
        accuracy=result.accuracy,
        drift_threshold=threshold,
    )
    try:
        result.screenshot = demo_report.screenshot(path, home / "report.png")
    except Exception as error:  # no browser here: the HTML report is still the result
        say(f"(no screenshot of the report: {error})")
    say(f"report: {path}" + (f" (first page: {result.screenshot})" if result.screenshot else ""))
    return path
