"""Pure parts of the management service, without a cluster: what the views derive
(lineage order, comparisons, who serves a model), how requests are authenticated, that
plots escape what they draw, and that the commands say which extra they need."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from bertops.ui import svg, views
from bertops.ui.auth import credentials, token_matches
from bertops.ui.service import DriftLog, Settings


def _model(name: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {}, "status": status}


def test_compare_says_which_model_is_better_per_measure() -> None:
    a = _model("a", metrics={"accuracy": 0.9}, latency={"p50Batch1Ms": 40.0}, format="onnx")
    b = _model("b", metrics={"accuracy": 0.8}, latency={"p50Batch1Ms": 10.0}, format="onnx")
    rows = {r["metric"]: r for r in views.compare(a, b)["rows"]}
    assert rows["accuracy"]["better"] == "a"
    assert rows["p50 latency batch 1 (ms)"]["better"] == "b"
    assert rows["format"]["better"] is None and rows["format"]["delta"] is None
    assert rows["recall"] == {
        "metric": "recall",
        "a": None,
        "b": None,
        "delta": None,
        "better": None,
    }


def test_serving_roles_cover_stable_canary_and_spec_ref() -> None:
    deployment = {
        "metadata": {"name": "d"},
        "spec": {"model": {"ref": {"name": "m"}}},
        "status": {"stableModel": "m", "canaryModel": "n"},
    }
    assert views.serving_roles(deployment, "m") == ["stable", "ref"]
    assert views.serving_roles(deployment, "n") == ["canary"]
    assert views.served_map([deployment]) == {"m": ["d"], "n": ["d"]}


def test_plots_escape_names_from_the_cluster() -> None:
    drawn = svg.line_chart({"<script>x</script>": [(1, 0.5), (2, 0.6)]}, title="t")
    assert "<script>" not in drawn and "&lt;script&gt;" in drawn
    matrix = svg.confusion_matrix(["<b>", "ok"], [[1, 2], [3, 4]], "c")
    assert "<b>" not in matrix
    assert "no data yet" in svg.line_chart({}, title="empty")


def test_credentials_prefer_the_header_and_read_the_cookie() -> None:
    header = {"headers": [(b"authorization", b"Bearer abc"), (b"cookie", b"bertops_token=def")]}
    assert credentials(header) == ("abc", False)
    assert credentials({"headers": [(b"cookie", b"x=1; bertops_token=def")]}) == ("def", True)
    assert credentials({"headers": [(b"authorization", b"Basic abc")]}) == (None, False)
    settings = Settings(namespace="n", token="secret")
    assert token_matches(settings, "secret") and not token_matches(settings, "secreT")
    assert not token_matches(Settings(namespace="n", token=None), "")


def test_drift_log_keeps_each_check_once() -> None:
    log = DriftLog()
    log.observe("d", {"lastCheck": "2026-01-01T00:00:00Z", "score": 0.1})
    log.observe("d", {"lastCheck": "2026-01-01T00:00:00Z", "score": 0.1})
    points = log.observe("d", {"lastCheck": "2026-01-01T00:05:00Z", "score": 0.4})
    assert [p["score"] for p in points] == [0.1, 0.4]


def test_commands_without_the_ui_extra_give_the_install_hint() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None; "
        "sys.argv = ['bertops', 'models', 'list']; "
        "from bertops.cli.main import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'bertops[ui]'" in result.stderr


def test_openapi_spec_lists_exactly_the_api_routes() -> None:
    from bertops.ui import api, openapi

    served = {
        (route.path, method.lower())
        for route in api.ROUTES
        for method in route.methods or ()
        if method != "HEAD"
    }
    spec = openapi.spec()["paths"]
    described = {
        (path, method) for path, item in spec.items() for method in item if method != "parameters"
    }
    assert served == described
