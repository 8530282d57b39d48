"""Prometheus alert rules and the Grafana dashboard in gitops/monitoring: ``promtool check
rules`` and ``promtool test rules`` on synthetic series (Debian's prometheus package;
.ci/run installs it), and every metric a rule or panel queries is one the code exports
(read from the metrics classes' registries) or one declared in declared-metrics.yaml."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.gitops.render import GITOPS

MONITORING = GITOPS / "monitoring"
RULES = MONITORING / "rules"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "summary": ("_sum", "_count", "_created", ""),
}
METRIC = re.compile(r"\b(bertops_[a-z0-9_]+|up)\b")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool missing: apt-get install prometheus (.ci/run installs it)")
    return subprocess.run(
        [found, *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules() -> None:
    proc = promtool("check", "rules", "bertops.rules.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 7 rules found" in proc.stdout


def test_promtool_test_rules() -> None:
    proc = promtool("test", "rules", "bertops.rules.test.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load((RULES / "bertops.rules.yaml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((RULES / "bertops.rules.test.yaml").read_text())
    tested = {
        case["alertname"]
        for t in tests["tests"]
        for case in t["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert alerts == tested
    wanted = {"RollbackHappened", "DriftDetected", "TrainingFailed", "StepStuck", "OperatorDown"}
    assert {f"Bertops{name}" for name in wanted} <= alerts


def exported() -> set[str]:
    from bertops.operator.metrics import OperatorMetrics
    from bertops.server.gateway.metrics import GatewayMetrics
    from bertops.server.metrics import ServerMetrics

    names: set[str] = set()
    for build in (OperatorMetrics, ServerMetrics, GatewayMetrics):
        registry = CollectorRegistry()
        build(registry)
        for family in registry.collect():
            names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def declared() -> set[str]:
    doc = yaml.safe_load((MONITORING / "declared-metrics.yaml").read_text())
    names = set(doc["builtin"])
    for name, spec in doc["declared"].items():
        if spec["type"] == "counter":
            assert name.endswith("_total"), name
        names.add(name)
    return names


def queries() -> list[str]:
    rules = yaml.safe_load((RULES / "bertops.rules.yaml").read_text())
    found = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    found += [r["annotations"]["description"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((MONITORING / "dashboards/bertops.json").read_text())
    found += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    found += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return found


def test_queried_metrics_exist_or_are_declared() -> None:
    known, promised = exported(), declared()
    assert "bertops_gateway_requests_total" in known  # the registries were read
    assert not promised & known, "exported now: remove from declared-metrics.yaml"
    used = {name for query in queries() for name in METRIC.findall(query)}
    assert used - known - promised == set()
    assert promised - used == set(), "declared but unused"


def test_dashboard_covers_the_story() -> None:
    dashboard: dict[str, Any] = json.loads((MONITORING / "dashboards/bertops.json").read_text())
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "requests",
        "latency",
        "errors",
        "canary weight",
        "drift",
        "retrains",
        "training",
    ):
        assert topic in titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
