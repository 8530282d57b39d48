"""The closed-loop demo's timeline: poll the four bertops kinds and print one short line
per change of state (a drift check, a retraining, a canary step, a promotion), never a
repeated table, while keeping the series the report plots.

Called by the demo (:mod:`bertops.cluster.demo`): build a :class:`Timeline` with the
demo's ``kubectl`` callable, call :meth:`Timeline.poll` in its wait loops (or
:meth:`Timeline.watch` until a condition holds), then hand ``timeline.lines`` and
``timeline.series`` to :func:`bertops.cluster.demo_report.write_report`.

:func:`facts` reduces the objects to the few fields a person follows and :func:`changes`
compares two such snapshots; both are pure, so tests feed them plain dicts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Kubectl = Callable[..., str]
KINDS = "bertdatasets,berttrainings,bertmodels"
# The condition that tells each kind's outcome.
OUTCOME = {"BertDataset": "Ready", "BertTraining": "Succeeded", "BertModel": "Ready"}


HOLDS = ("NotYetSure", "WaitingForTraffic", "WaitingForRoutes", "ProgressDeadlineExceeded")


def _condition(body: dict[str, Any], type_: str) -> tuple[str, str]:
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return str(condition.get("status")), str(condition.get("reason") or "")
    return "Unknown", ""


def _deployment_facts(body: dict[str, Any]) -> dict[str, Any]:
    status = body.get("status") or {}
    drift = status.get("drift") or {}
    retrains = (status.get("retrains") or {}).get("history") or []
    return {
        "stable": status.get("stableModel"),
        "canary": status.get("canaryModel"),
        "weight": status.get("canaryWeight") if status.get("canaryModel") else None,
        "drift": (drift.get("lastCheck"), drift.get("score"), drift.get("drifted")),
        "driftReport": drift.get("reportUri"),
        "retrains": {
            r.get("training"): (
                r.get("dataset"),
                r.get("outcome"),
                r.get("model"),
                r.get("driftScore"),
            )
            for r in retrains
        },
        "history": [
            (h.get("model"), h.get("outcome"), h.get("message"))
            for h in status.get("history") or []
        ],
        "waiting": ((status.get("retrains") or {}).get("waiting") or {}).get("needed"),
        "challenge": (
            (challenge := status.get("challenge") or {}).get("model"),
            challenge.get("phase"),
            challenge.get("message"),
        ),
        "holding": _holding(body),
    }


def _holding(body: dict[str, Any]) -> tuple[str, str] | None:
    """Why a canary step holds, while one does: the reason, and the step with the gates
    not yet sure (their names, not their whole messages: one line each time the set
    changes)."""
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") in HOLDS:
            message = str(condition.get("message") or "")
            where, _, gates = message.partition(" holds: ")
            if not gates:
                return str(condition["reason"]), message
            names = [part.split(":", 1)[0] for part in gates.split("; ")]
            return str(condition["reason"]), f"{where} waits for {', '.join(names)}"
    return None


def facts(deployment: dict[str, Any] | None, objects: list[dict[str, Any]]) -> dict[str, Any]:
    """What the timeline follows, as plain comparable values."""
    out: dict[str, Any] = {"deployment": _deployment_facts(deployment or {}), "objects": {}}
    for body in objects:
        kind, name = body.get("kind", ""), (body.get("metadata") or {}).get("name", "")
        status = body.get("status") or {}
        fact: dict[str, Any] = {"outcome": _condition(body, OUTCOME.get(kind, "Ready"))}
        if kind == "BertTraining":
            progress = status.get("progress") or {}
            fact["epoch"] = (progress.get("epoch"), progress.get("totalEpochs"))
            fact["accuracy"] = (status.get("validationMetrics") or {}).get("accuracy")
        elif kind == "BertDataset":
            fact["rows"] = status.get("rows")
        out["objects"][f"{kind}/{name}"] = fact
    return out


def _object_lines(key: str, old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    kind, name = key.split("/", 1)
    label = {"BertDataset": "dataset", "BertTraining": "training", "BertModel": "model"}.get(
        kind, kind
    )
    lines = []
    if old is None:
        lines.append(f"{label} {name} created")
    epoch = new.get("epoch")
    if kind == "BertTraining" and epoch and epoch[0] and epoch != (old or {}).get("epoch"):
        lines.append(f"training {name}: epoch {epoch[0]}/{epoch[1]}")
    if new["outcome"] != (old or {}).get("outcome") and new["outcome"][0] != "Unknown":
        state, reason = new["outcome"]
        if state == "True":
            done = "succeeded" if kind == "BertTraining" else "ready"
            accuracy = new.get("accuracy")
            extra = f" (validation accuracy {accuracy:.3f})" if accuracy is not None else ""
            lines.append(f"{label} {name} {done}{extra}")
        elif reason and reason != (old or {}).get("outcome", ("", ""))[1]:
            lines.append(f"{label} {name}: {reason}")
    return lines


def _deployment_lines(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    lines = []
    if new["stable"] != old.get("stable") and new["stable"]:
        lines.append(f"stable model {new['stable']}")
    at, score, drifted = new["drift"]
    seen = old.get("drift", (None, None, None))
    # A check is a line when its verdict changes (every score is in the report's series).
    if at and at != seen[0] and (drifted, score is None) != (seen[2], seen[1] is None):
        if isinstance(score, int | float):
            verdict = "drifted" if drifted else "no drift"
            report = f" report {new['driftReport']}" if new.get("driftReport") else ""
            lines.append(f"drift check: score {score:.2f} ({verdict}){report}")
        else:
            lines.append("drift check: not enough traffic yet (no score)")
    for training, (dataset, outcome, model, _score) in new["retrains"].items():
        before = (old.get("retrains") or {}).get(training)
        if before is None:
            lines.append(f"retraining: dataset {dataset}, training {training}")
        elif before[1] != outcome:
            lines.append(
                f"retraining {training}: {outcome}" + (f" (model {model})" if model else "")
            )
    lines += _judgment_lines(old, new)
    if new["canary"] and (new["canary"], new["weight"]) != (old.get("canary"), old.get("weight")):
        lines.append(f"canary {new['canary']} at {new['weight'] or 0}%")
    for model, outcome, message in new["history"][len(old.get("history") or []) :]:
        verb = {"Promoted": "promoted", "RolledBack": "rolled back", "Aborted": "aborted"}
        tail = f": {message}" if message and outcome != "Promoted" else ""
        lines.append(f"{verb.get(outcome, outcome)} {model}{tail}")
    return lines


def _judgment_lines(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The retraining's wait for labels, the offline evaluation, and what a step holds
    for (once per reason, shortened)."""
    lines = []
    if new.get("waiting") and not old.get("waiting"):
        lines.append(f"retraining waits for {new['waiting']} new feedback labels")
    model, phase, message = new.get("challenge") or (None, None, None)
    if model and (model, phase) != tuple((old.get("challenge") or (None, None))[:2]):
        detail = f": {message}" if message and phase != "Running" else ""
        lines.append(f"offline evaluation of {model}: {phase}{detail}")
    holding = new.get("holding")
    if holding and holding != old.get("holding"):
        lines.append(f"canary holds ({holding[0]}): {holding[1]}")
    return lines


def changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """One line per change between two :func:`facts` snapshots (old None: the first)."""
    old = old or {"deployment": {}, "objects": {}}
    lines = []
    for key in sorted(new["objects"]):
        lines += _object_lines(key, old["objects"].get(key), new["objects"][key])
    return lines + _deployment_lines(old["deployment"], new["deployment"])


def elapsed(seconds: float) -> str:
    minutes, rest = divmod(max(0, int(seconds)), 60)
    return f"{minutes:02d}:{rest:02d}"


@dataclass
class Timeline:
    """Polls the deployment ``name`` and every dataset/training/model; prints changes."""

    kubectl: Kubectl
    name: str
    say: Callable[[str], None] = print
    clock: Callable[[], float] = time.time
    start: float = field(default_factory=time.time)
    lines: list[str] = field(default_factory=list)
    # Report series: "canaryWeight" (t, %), "driftScore" (t, score), and per training
    # "trainingLoss/<name>" (t, loss) from status.progress; t in seconds since start.
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    last: dict[str, Any] | None = None
    # Something else to follow (the node demo: the Argo CD Applications' state), read on
    # each poll: a change of it is a line of its own, and every line ends with it.
    side: Callable[[], str] | None = None
    last_side: str = ""

    def _get(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        text = self.kubectl("get", "bertdeployment", self.name, "-o", "json", "--ignore-not-found")
        deployment = json.loads(text) if text.strip() else None
        listed = self.kubectl("get", KINDS, "-o", "json")
        return deployment, (json.loads(listed) if listed.strip() else {}).get("items") or []

    def _record_series(
        self, t: float, deployment: dict[str, Any] | None, objects: list[dict[str, Any]]
    ) -> None:
        status = (deployment or {}).get("status") or {}
        weight = status.get("canaryWeight") if status.get("canaryModel") else 0
        self.series.setdefault("canaryWeight", []).append((t, float(weight or 0)))
        drift = status.get("drift") or {}
        score, checked = drift.get("score"), drift.get("lastCheck")
        if (
            isinstance(score, int | float)
            and checked != (self.last or {}).get("deployment", {}).get("drift", (None,))[0]
        ):
            self.series.setdefault("driftScore", []).append((t, float(score)))
        for body in objects:
            loss = ((body.get("status") or {}).get("progress") or {}).get("loss")
            if body.get("kind") == "BertTraining" and isinstance(loss, int | float):
                name = (body.get("metadata") or {}).get("name", "")
                points = self.series.setdefault(f"trainingLoss/{name}", [])
                if not points or points[-1][1] != loss:
                    points.append((t, float(loss)))

    def poll(self) -> list[str]:
        """One look at the cluster; prints and returns the new lines."""
        deployment, objects = self._get()
        t = self.clock() - self.start
        now = facts(deployment, objects)
        self._record_series(t, deployment, objects)
        side = self.side() if self.side else ""
        new = [
            f"{elapsed(t)} {line}" + (f"  | {side}" if side else "")
            for line in changes(self.last, now)
        ]
        if side != self.last_side:
            new.append(f"{elapsed(t)} {side}")
            self.last_side = side
        self.last = now
        for line in new:
            self.say(line)
        self.lines += new
        return new

    def watch(self, done: Callable[[], bool], timeout: float, interval: float = 2.0) -> bool:
        """Poll until ``done()`` (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if done():
                # done() read the cluster after that poll: what it saw (a promotion)
                # becomes a line too, not a state the timeline never shows.
                self.poll()
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)
