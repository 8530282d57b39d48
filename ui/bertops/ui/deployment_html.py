"""The deployment page's body: stable and canary, the live canary weight (polled by
``static/bertops.js`` from ``/api/deployments/{name}``), the offline evaluation, the last
analysis gate by gate (decision, estimate, interval, how many more requests it needs),
the rollout history, the drift score over time with links to the Evidently reports, and
the promote/abort/pause/resume actions.

Rendered by :func:`bertops.ui.pages.deployment_page` from
:func:`bertops.ui.service.deployment`'s data.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from bertops.ui import svg
from bertops.ui.markup import button, e, link, num, ready_badge, table

# Only http(s) report links become clickable: a file path or another scheme is shown as
# text (a browser would not open it, and javascript: must never become a link).
LINK_SCHEMES = ("http://", "https://")


def _report(uri: Any) -> str:
    if not uri:
        return "-"
    if str(uri).startswith(LINK_SCHEMES):
        return f'<a class="report" href="{e(uri)}" rel="noreferrer">Evidently report</a>'
    return f'<code class="report">{e(uri)}</code>'


def _drift(data: dict[str, Any]) -> str:
    drift, history = data["drift"], data["driftHistory"]
    points = []
    for index, point in enumerate(history):
        try:
            x = datetime.fromisoformat(str(point["at"]).replace("Z", "+00:00")).timestamp()
        except ValueError:
            x = float(index)
        points.append((x, float(point["score"])))
    start = points[0][0] if points else 0.0
    series = {"drift score": [(x - start, y) for x, y in points]}
    chart = svg.line_chart(
        series,
        title="Drift score over time",
        x_label="seconds since first check",
        threshold=data["driftThreshold"],
        y_range=(0.0, 1.0),
        css_class="chart drift",
    )
    facts = table(
        ["score", "drifted", "last check", "window rows", "report"],
        [
            [
                num(drift.get("score")),
                e(drift.get("drifted")),
                e(drift.get("lastCheck")),
                e(drift.get("windowRows")),
                _report(drift.get("reportUri")),
            ]
        ],
    )
    return f"<h2>Drift</h2>{facts}{chart}"


def _interval(gate: dict[str, Any]) -> str:
    lower, upper, level = gate.get("lower"), gate.get("upper"), gate.get("confidence")
    if lower is None or upper is None:
        return "-"
    at = f" at {level:.1%}" if isinstance(level, int | float) else ""
    return e(f"[{lower:.4g}, {upper:.4g}]{at}")


def _analysis(data: dict[str, Any]) -> str:
    """Each gate's decision (passed, failed, not yet sure, reported), estimate, interval
    with its confidence, bound, and how many more requests it needs."""
    analysis = data["analysis"] or {}
    gates = analysis.get("gates") or []
    if not gates:
        return ""
    rows = [
        [
            e(g.get("name")),
            e(g.get("result")),
            num(g.get("value")),
            _interval(g),
            num(g.get("threshold")),
            e(g.get("needed") or ""),
            e(g.get("message")),
        ]
        for g in gates
    ]
    heading = f"Last analysis ({e(analysis.get('at'))}, look {e(analysis.get('looks'))})"
    return f"<h2>{heading}</h2>" + table(
        ["gate", "decision", "estimate", "interval", "bound", "needs more", "message"], rows
    )


def _challenge(data: dict[str, Any]) -> str:
    """The offline evaluation of the last new model against stable."""
    challenge = data.get("challenge") or {}
    if not challenge:
        return ""
    rows = [
        [e(s.get("set")), e(s.get("rows")), num(s.get("stable")), num(s.get("candidate"))]
        for s in challenge.get("scores") or []
    ]
    heading = (
        f"Offline evaluation: {link('BertModel', challenge.get('model'))} against "
        f"{link('BertModel', challenge.get('stable'))}: {e(challenge.get('phase'))}"
    )
    scores = table(["set", "rows", "stable", "candidate"], rows) if rows else ""
    return f'<h2>{heading}</h2>{scores}<p class="muted">{e(challenge.get("message"))}</p>'


def render(data: dict[str, Any]) -> str:
    name = data["name"]
    url = f"/api/deployments/{quote(name)}"
    actions = "".join(
        button(
            label,
            "post",
            f"{url}/actions/{action}",
            f"{label} the rollout of {name}?",
            action == "abort",
        )
        for action, label in (
            ("promote", "Promote"),
            ("abort", "Abort"),
            ("pause", "Pause"),
            ("resume", "Resume"),
        )
    )
    history = (
        table(
            ["model", "outcome", "at", "message"],
            [
                [
                    link("BertModel", h.get("model")),
                    e(h.get("outcome")),
                    e(h.get("at")),
                    e(h.get("message")),
                ]
                for h in data["history"]
            ],
            "history",
        )
        if data["history"]
        else "<p>No rollout finished yet.</p>"
    )
    conditions = " ".join(
        f"{kind}: {ready_badge(data[kind])}"
        for kind in ("ready", "progressing", "degraded", "drifted")
    )
    return (
        f'<section class="actions">{actions}</section>'
        f'<div data-poll="{e(url)}" data-every="1000">'
        f"<p>{conditions}</p>"
        '<table class="rollout"><tr><th>stable</th><th>canary</th><th>canary weight</th>'
        "<th>step</th></tr><tr>"
        f'<td data-field="stableModel">{link("BertModel", data["stableModel"])}</td>'
        f'<td data-field="canaryModel">{link("BertModel", data["canaryModel"])}</td>'
        f'<td><span id="canary-weight" data-field="canaryWeight">{e(data["canaryWeight"])}'
        "</span>%</td>"
        f'<td data-field="rolloutStep">{e(data["rolloutStep"])}</td></tr></table>'
        f"{svg.weight_bar(data['canaryWeight'], data['steps'])}"
        f'<p class="muted">Progressing: <span data-field="progressingMessage">'
        f"{e(data['progressing']['message'])}</span></p></div>"
        f"<p>Endpoint: <code>{e(data['endpoint'])}</code> · last action: "
        f"<code>{e(data['lastAction'])}</code></p>"
        f"{_challenge(data)}{_analysis(data)}<h2>Rollout history</h2>{history}{_drift(data)}"
    )
