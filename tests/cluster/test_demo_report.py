"""The demo's report: one self-contained HTML file (plotly.js inline, no network) with
every plot that has data, and a PNG of its first page taken with Debian's chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bertops.cluster import browser, demo_report
from bertops.cluster.demo_traffic import Record

HISTORY = [
    {"epoch": 1, "trainLoss": 0.9, "validation": {"loss": 0.8, "accuracy": 0.6}},
    {"epoch": 2, "trainLoss": 0.6, "validation": {"loss": 0.7, "accuracy": 0.7}},
]


def _records() -> list[Record]:
    out = []
    for i in range(20):
        model = "sentiment-v1" if i % 3 else "sentiment-r1"
        out.append(
            Record(
                at=float(i),
                phase="shifted" if i >= 10 else "normal",
                index=i,
                status=200,
                latency_s=0.05 + i / 1000,
                variant="canary" if model.endswith("r1") else "stable",
                model=model,
                label="neutral",
                correct=(i % 2 == 0),
                error="HTTP 503: x" if i == 7 else None,
            )
        )
    return out


def _report(tmp_path: Path, **kwargs: Any) -> tuple[Path, str]:
    path = demo_report.write_report(
        tmp_path / "report" / "demo.html",
        timeline=[
            "00:42 drift check: score 0.83 (drifted) <report>",
            "03:40 promoted sentiment-r1",
        ],
        total_seconds=245,
        **kwargs,
    )
    return path, path.read_text(encoding="utf-8")


def test_report_is_self_contained_with_every_plot(tmp_path: Path) -> None:
    path, text = _report(
        tmp_path,
        series={
            "canaryWeight": [(0, 0), (60, 10), (120, 50), (180, 0)],
            "driftScore": [(30, 0.1), (90, 0.83)],
            "trainingLoss/sentiment-retrain-1": [(100, 0.9), (130, 0.5)],
        },
        records=_records(),
        histories={"sentiment-v1": HISTORY},
        drift_threshold=0.3,
    )
    assert not re.search(r"<script[^>]+src=", text)  # nothing fetched: opens offline
    assert "plotly.js" in text.lower() and len(text) > 3_000_000
    assert "Total time: 4 min 05 s" in text
    assert "&lt;report&gt;" in text  # the timeline is escaped
    for title in (
        "Training (per epoch)",
        "Training loss (live)",
        "Canary weight",
        "Drift score",
        "Traffic per variant",
        "Accuracy on the shifted data",
    ):
        assert title in text, title
    assert not list(path.parent.glob("*.tmp"))


def test_plots_without_data_are_left_out(tmp_path: Path) -> None:
    _, text = _report(tmp_path)
    assert "Canary weight" not in text and "Traffic per variant" not in text
    assert "(no events)" not in text and "promoted sentiment-r1" in text


def test_shifted_accuracy_per_model_from_the_records() -> None:
    accuracy = demo_report.shifted_accuracy(_records())
    assert accuracy == {"sentiment-r1": pytest.approx(2 / 3), "sentiment-v1": pytest.approx(3 / 7)}


def test_training_history_reads_the_model_artifact(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({"history": HISTORY, "test": {}}))
    assert demo_report.training_history(tmp_path) == HISTORY
    assert demo_report.training_history(tmp_path / "missing") == []


@pytest.mark.slow
def test_screenshot_of_the_first_page(tmp_path: Path) -> None:
    if not browser.available():
        pytest.skip(browser.INSTALL_HINT)
    path, _ = _report(tmp_path, series={"canaryWeight": [(0, 0), (60, 10)]}, records=_records())
    png = demo_report.screenshot(path, tmp_path / "demo.png", width=800, height=600)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (800, 600) and len(data) > 10_000
