"""The closed-loop demo's HTML report: one self-contained file (plotly.js embedded, so it
opens offline) with the timeline, training curves, the canary weight and the drift score
over time, latency and error rate per variant, and the accuracy on the shifted data
before and after retraining; and a PNG screenshot of its first page.

Called by the demo (:mod:`bertops.cluster.demo`) at the end: :func:`write_report` with
the :class:`~bertops.cluster.demo_timeline.Timeline`'s lines and series and the
:mod:`~bertops.cluster.demo_traffic` records, then :func:`screenshot`. plotly is imported
here only (a dev dependency, pinned in constraints.txt), so the rest of the cluster
package imports without it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bertops.cluster import browser
from bertops.cluster.demo_traffic import Record, summarize

Series = Sequence[tuple[float, float]]
History = Sequence[Mapping[str, Any]]  # per epoch: epoch, trainLoss, validation{loss, ...}
METRICS_FILE = "metrics.json"  # written beside a model artifact by the train step
PLOT_HEIGHT = 320


def training_history(model_artifact: Path | str) -> list[dict[str, Any]]:
    """The per-epoch history of a model artifact (its ``metrics.json``), or []: a local
    folder, or a URI in an object store (read through fsspec, credentials from the
    environment)."""
    try:
        if isinstance(model_artifact, str):
            import fsspec

            with fsspec.open(f"{model_artifact.rstrip('/')}/{METRICS_FILE}", "rb") as handle:
                text = handle.read().decode("utf-8")
        else:
            text = (model_artifact / METRICS_FILE).read_text(encoding="utf-8")
        history = json.loads(text).get("history")
    except (OSError, ValueError, AttributeError):
        return []
    return [h for h in history or [] if isinstance(h, dict)]


def _layout(title: str, x: str, y: str) -> dict[str, Any]:
    return {
        "title": {"text": title},
        "height": PLOT_HEIGHT,
        "margin": {"l": 50, "r": 20, "t": 40, "b": 40},
        "xaxis": {"title": {"text": x}},
        "yaxis": {"title": {"text": y}},
        "legend": {"orientation": "h", "y": -0.25},
    }


def training_figure(histories: Mapping[str, History]) -> Any:
    import plotly.graph_objects as go

    figure = go.Figure(layout=_layout("Training (per epoch)", "epoch", "loss / accuracy"))
    figure.update_xaxes(dtick=1)
    for name, history in histories.items():
        epochs = [h.get("epoch") for h in history]
        validation = [h.get("validation") or {} for h in history]
        curves = {
            "train loss": [h.get("trainLoss") for h in history],
            "val loss": [v.get("loss") for v in validation],
            "val accuracy": [v.get("accuracy") for v in validation],
        }
        for curve, values in curves.items():
            figure.add_scatter(x=epochs, y=values, mode="lines+markers", name=f"{name} {curve}")
    return figure


def series_figure(
    title: str,
    y: str,
    series: Mapping[str, Series],
    threshold: float | None = None,
    steps: bool = False,
) -> Any:
    import plotly.graph_objects as go

    figure = go.Figure(layout=_layout(title, "seconds since start", y))
    for name, points in series.items():
        figure.add_scatter(
            x=[t for t, _ in points],
            y=[v for _, v in points],
            mode="lines+markers",
            name=name,
            line={"shape": "hv" if steps else "linear"},  # a weight holds until changed
        )
    if threshold is not None:
        figure.add_hline(y=threshold, line_dash="dot", annotation_text=f"threshold {threshold}")
    return figure


def variants_figure(records: Sequence[Record]) -> Any:
    """Latency p50/p95 and error rate per answering variant (or model when the gateway
    does not expose the variant header)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    table = summarize(records, key=lambda r: r.variant or r.model or "no answer")
    names = list(table)
    figure = make_subplots(rows=1, cols=2, subplot_titles=("latency (ms)", "error rate"))
    for stat in ("latencyP50", "latencyP95"):
        values = [table[n][stat] * 1000 for n in names]
        figure.add_trace(go.Bar(x=names, y=values, name=stat), row=1, col=1)
    figure.add_trace(
        go.Bar(x=names, y=[table[n]["errorRate"] for n in names], name="error rate"), row=1, col=2
    )
    figure.update_layout(height=PLOT_HEIGHT, title_text="Traffic per variant", margin={"t": 60})
    return figure


def accuracy_figure(accuracy: Mapping[str, float]) -> Any:
    import plotly.graph_objects as go

    figure = go.Figure(layout=_layout("Accuracy on the shifted data", "", "accuracy"))
    figure.add_bar(
        x=list(accuracy), y=list(accuracy.values()), text=[f"{v:.2f}" for v in accuracy.values()]
    )
    figure.update_yaxes(range=[0, 1])
    return figure


def shifted_accuracy(records: Sequence[Record], phase: str = "shifted") -> dict[str, float]:
    """Accuracy of each model on the labelled requests of ``phase`` (the shifted stream)."""
    table = summarize([r for r in records if r.phase == phase])
    return {
        name: row["accuracy"] for name, row in table.items() if row["accuracy"] == row["accuracy"]
    }


def _header(title: str, total_seconds: float, timeline: Sequence[str]) -> str:
    minutes, seconds = divmod(int(total_seconds), 60)
    lines = "\n".join(html.escape(line) for line in timeline) or "(no events)"
    return (
        f"<h1>{html.escape(title)}</h1>"
        f"<p>Total time: {minutes} min {seconds:02d} s</p>"
        f"<details open><summary>Timeline</summary><pre>{lines}</pre></details>"
    )


def write_report(
    path: Path,
    *,
    timeline: Sequence[str],
    total_seconds: float,
    series: Mapping[str, Series] | None = None,
    records: Sequence[Record] = (),
    histories: Mapping[str, History] | None = None,
    accuracy: Mapping[str, float] | None = None,
    drift_threshold: float | None = None,
    title: str = "bertops closed-loop demo",
) -> Path:
    """Write the report to ``path``. ``series`` as kept by the timeline ("canaryWeight",
    "driftScore", "trainingLoss/<name>"); ``histories`` per training name (see
    :func:`training_history`); ``accuracy`` on the shifted evaluation set, e.g.
    ``{"before: sentiment-v1": 0.41, "after: sentiment-r1": 0.78}`` (default: from the
    shifted phase's records). Plots without data are left out."""
    import plotly.offline

    series = series or {}
    figures = []
    if histories:
        figures.append(training_figure(histories))
    losses = {k.split("/", 1)[1]: v for k, v in series.items() if k.startswith("trainingLoss/")}
    if losses:
        figures.append(series_figure("Training loss (live)", "loss", losses))
    if series.get("canaryWeight"):
        figures.append(
            series_figure("Canary weight", "%", {"canary": series["canaryWeight"]}, steps=True)
        )
    if series.get("driftScore"):
        figures.append(
            series_figure("Drift score", "score", {"drift": series["driftScore"]}, drift_threshold)
        )
    if records:
        figures.append(variants_figure(records))
    accuracy = accuracy if accuracy is not None else shifted_accuracy(records)
    if accuracy:
        figures.append(accuracy_figure(accuracy))
    body = "\n".join(
        f"<div class='plot'>{f.to_html(full_html=False, include_plotlyjs=False)}</div>"
        for f in figures
    )
    document = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}pre{background:#f4f4f4;padding:.8em}"
        ".plot{max-width:1100px}</style>"
        # plotly.js inline: the report must open without a network (no CDN).
        f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script>"
        f"</head><body>{_header(title, total_seconds, timeline)}{body}</body></html>"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(document, encoding="utf-8")
    temporary.replace(path)  # never a half-written report
    return path


def screenshot(html_path: Path, png_path: Path, width: int = 1280, height: int = 1000) -> Path:
    """A PNG of the report's first page (one viewport), taken with Debian's chromium."""
    with browser.launch() as launched:
        page = launched.new_page(viewport={"width": width, "height": height})
        page.goto(Path(html_path).resolve().as_uri())
        # Each plot draws itself after load; wait until every one has its SVG.
        page.wait_for_function(
            "Array.from(document.querySelectorAll('.plot .plotly-graph-div'))"
            ".every(d => d.querySelector('svg.main-svg'))",
            timeout=30000,
        )
        page.screenshot(path=str(png_path))
        page.close()
    return Path(png_path)
