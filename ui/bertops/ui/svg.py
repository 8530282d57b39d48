"""Plots as inline SVG, drawn on the server from stored metrics: line charts (training
curves, drift score over time) and a confusion-matrix heat map.

Called by :mod:`bertops.ui.pages`. No JavaScript, no fonts or files fetched: the browser
renders the markup as it comes, so the UI works with no network at run time. Every text
that reaches the markup goes through :func:`html.escape`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    x_label: str = "epoch",
    width: int = 560,
    height: int = 260,
    threshold: float | None = None,
    y_range: tuple[float, float] | None = None,
    css_class: str = "chart",
) -> str:
    """One SVG with a polyline (and dots) per series, axes with min/max ticks, a legend,
    an optional dashed horizontal threshold line and an optional fixed y scale."""
    points = [p for values in series.values() for p in values]
    if not points:
        return f'<p class="empty">{escape(title)}: no data yet</p>'
    left, right, top, bottom = 56, 150, 28, 36
    xs = [p[0] for p in points]
    ys = [p[1] for p in points] + ([threshold] if threshold is not None else [])
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if y_range is not None:  # a fixed scale (e.g. a score in [0, 1]) widened to fit
        y0, y1 = min(y0, y_range[0]), max(y1, y_range[1])
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    if y0 == y1:
        y0, y1 = y0 - 0.5, y1 + 0.5
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [
        f'<svg class="{escape(css_class)}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f'<text x="{left}" y="16" class="title">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#444"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#444"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{_fmt(y1)}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">{_fmt(y0)}</text>',
        f'<text x="{left}" y="{height - 18}" text-anchor="middle">{_fmt(x0)}</text>',
        f'<text x="{left + plot_w}" y="{height - 18}" text-anchor="middle">{_fmt(x1)}</text>',
        f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle">'
        f"{escape(x_label)}</text>",
    ]
    if threshold is not None:
        y = sy(threshold)
        parts.append(
            f'<line class="threshold" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" '
            f'y2="{y:.1f}" stroke="#999" stroke-dasharray="4 3"/>'
        )
    for index, (name, values) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        parts.append(
            f'<polyline class="series" data-series="{escape(name)}" fill="none" '
            f'stroke="{color}" stroke-width="2" points="{coords}"/>'
        )
        parts.extend(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}">'
            f"<title>{escape(name)} {_fmt(x)}: {_fmt(y)}</title></circle>"
            for x, y in values
        )
        legend_y = top + 14 + index * 16
        parts.append(
            f'<rect x="{width - right + 10}" y="{legend_y - 9}" width="10" height="10" '
            f'fill="{color}"/><text x="{width - right + 24}" y="{legend_y}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def confusion_matrix(labels: Sequence[str], matrix: Sequence[Sequence[float]], title: str) -> str:
    """A heat map: rows are true labels, columns predicted; darker is more."""
    if not matrix:
        return f'<p class="empty">{escape(title)}: no data</p>'
    cell, margin_left, margin_top = 56, 110, 60
    size = len(matrix)
    width, height = margin_left + cell * size + 10, margin_top + cell * size + 30
    peak = max((max(row) for row in matrix if row), default=0) or 1
    parts = [
        f'<svg class="confusion" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f'<text x="4" y="16" class="title">{escape(title)}</text>',
        f'<text x="{margin_left}" y="{margin_top - 26}">predicted →</text>',
        f'<text x="4" y="{margin_top + 12}">true ↓</text>',
    ]
    for j, label in enumerate(labels):
        parts.append(
            f'<text x="{margin_left + j * cell + cell / 2}" y="{margin_top - 8}" '
            f'text-anchor="middle">{escape(str(label)[:10])}</text>'
        )
    for i, row in enumerate(matrix):
        y = margin_top + i * cell
        parts.append(
            f'<text x="{margin_left - 6}" y="{y + cell / 2 + 4}" text-anchor="end">'
            f"{escape(str(labels[i])[:14])}</text>"
        )
        for j, value in enumerate(row):
            shade = 0.08 + 0.85 * (float(value) / peak)
            ink = "#fff" if shade > 0.5 else "#111"
            parts.append(
                f'<rect class="cell" x="{margin_left + j * cell}" y="{y}" width="{cell - 2}" '
                f'height="{cell - 2}" fill="rgba(31,119,180,{shade:.2f})"/>'
                f'<text x="{margin_left + j * cell + cell / 2 - 1}" y="{y + cell / 2 + 4}" '
                f'text-anchor="middle" fill="{ink}">{_fmt(float(value))}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def weight_bar(weight: int, steps: Sequence[int]) -> str:
    """The canary's share of traffic as a bar growing from the left, with ticks at the
    rollout's step weights (``static/bertops.js`` resizes the bar as it polls)."""
    weight = max(0, min(100, int(weight)))
    ticks = "".join(
        f'<line x1="{4 + 3 * s}" y1="2" x2="{4 + 3 * s}" y2="30" stroke="#333" '
        'stroke-dasharray="2 2"/>'
        for s in steps
        if isinstance(s, int)
    )
    return (
        '<svg class="weight" xmlns="http://www.w3.org/2000/svg" width="312" height="32" '
        'viewBox="0 0 312 32">'
        '<rect x="4" y="6" width="300" height="20" fill="#cfe3f3"/>'
        f'<rect class="canary" x="4" y="6" width="{3 * weight}" '
        'height="20" fill="#ff7f0e"/>'
        f"{ticks}</svg>"
    )
