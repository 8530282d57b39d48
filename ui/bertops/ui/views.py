"""What people read about bertops objects, as plain JSON-ready dicts: catalogue rows,
lineage chains, side-by-side comparisons, deployment and training summaries.

Pure functions of the objects the API server returned (no I/O), called by the CLI
(:mod:`bertops.cli.models`), the JSON API (:mod:`bertops.ui.api`) and, through the API's
data, the HTML pages; so the terminal, the JSON and the browser say the same thing.
"""

from __future__ import annotations

from typing import Any

# (label, dotted path under status, True when higher is better, None when neither)
COMPARED: tuple[tuple[str, str, bool | None], ...] = (
    ("accuracy", "metrics.accuracy", True),
    ("macro F1", "metrics.macroF1", True),
    ("precision", "metrics.precision", True),
    ("recall", "metrics.recall", True),
    ("test loss", "metrics.loss", False),
    ("parameters", "size.parameters", False),
    ("bytes on disk", "size.bytesOnDisk", False),
    ("p50 latency batch 1 (ms)", "latency.p50Batch1Ms", False),
    ("p95 latency batch 1 (ms)", "latency.p95Batch1Ms", False),
    ("p50 latency batch 32 (ms)", "latency.p50Batch32Ms", False),
    ("throughput (/s)", "latency.throughputPerSecond", True),
    ("format", "format", None),
)


def dig(body: Any, path: str) -> Any:
    """The value at a dotted path, or None when any part is missing."""
    node = body
    for key in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def name_of(body: dict[str, Any]) -> str:
    return str(body["metadata"]["name"])


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    """status, reason and message of one condition ("Unknown" when absent)."""
    for found in dig(body, "status.conditions") or []:
        if found.get("type") == type_:
            return {
                "status": found.get("status", "Unknown"),
                "reason": found.get("reason", ""),
                "message": found.get("message", ""),
            }
    return {"status": "Unknown", "reason": "", "message": ""}


def serving_roles(deployment: dict[str, Any], model: str) -> list[str]:
    """How a deployment uses a model: ``stable``, ``canary``, ``ref`` (named in spec)."""
    roles = []
    if dig(deployment, "status.stableModel") == model:
        roles.append("stable")
    if dig(deployment, "status.canaryModel") == model:
        roles.append("canary")
    if dig(deployment, "spec.model.ref.name") == model:
        roles.append("ref")
    return roles


def served_map(deployments: list[dict[str, Any]]) -> dict[str, list[str]]:
    """model name -> the deployments that serve or name it."""
    found: dict[str, list[str]] = {}
    for deployment in deployments:
        for path in ("status.stableModel", "status.canaryModel", "spec.model.ref.name"):
            model = dig(deployment, path)
            if model and name_of(deployment) not in found.setdefault(model, []):
                found[model].append(name_of(deployment))
    return found


def lineage(model: dict[str, Any]) -> list[dict[str, Any]]:
    """The chain a model came from, oldest first: dataset (checksum) → training → base or
    parent model → compression recipe. ``kind`` names the object a link can point at."""
    line = dig(model, "status.lineage") or {}
    chain: list[dict[str, Any]] = []
    if line.get("dataset") or line.get("datasetChecksum"):
        checksum = str(line.get("datasetChecksum") or "")
        chain.append(
            {
                "label": "dataset",
                "value": line.get("dataset") or "?",
                "detail": f"sha256 {checksum[:12]}" if checksum else "",
                "kind": "BertDataset",
            }
        )
    if line.get("trainingRun") or dig(model, "spec.trainingRef.name"):
        training = dig(model, "spec.trainingRef.name") or line.get("trainingRun")
        chain.append({"label": "training", "value": training, "detail": "", "kind": "BertTraining"})
    if line.get("baseModel"):
        chain.append({"label": "base model", "value": line["baseModel"], "detail": "", "kind": ""})
    parent = line.get("parentModel") or dig(model, "spec.compression.parentRef.name")
    if parent:
        chain.append({"label": "parent model", "value": parent, "detail": "", "kind": "BertModel"})
    recipe = line.get("recipe") or [
        s.get("method") for s in dig(model, "spec.compression.steps") or []
    ]
    if recipe:
        chain.append(
            {
                "label": "compression",
                "value": " → ".join(map(str, recipe)),
                "detail": "",
                "kind": "",
            }
        )
    if dig(model, "spec.artifactUri"):
        chain.append(
            {
                "label": "external artifact",
                "value": model["spec"]["artifactUri"],
                "detail": "",
                "kind": "",
            }
        )
    chain.append({"label": "model", "value": name_of(model), "detail": "", "kind": "BertModel"})
    return chain


def model_row(model: dict[str, Any], served: list[str]) -> dict[str, Any]:
    """One catalogue row: what ``models list`` and the catalogue page show."""
    status = model.get("status") or {}
    return {
        "name": name_of(model),
        "family": dig(model, "spec.family"),
        "format": status.get("format"),
        "ready": condition(model, "Ready"),
        "metrics": status.get("metrics") or {},
        "size": status.get("size") or {},
        "latency": status.get("latency") or {},
        "parent": dig(status, "lineage.parentModel"),
        "datasetChecksum": dig(status, "lineage.datasetChecksum"),
        "lineage": lineage(model),
        "servedBy": served,
        "createdAt": model["metadata"].get("creationTimestamp"),
    }


def model_detail(model: dict[str, Any], served: list[str]) -> dict[str, Any]:
    """Everything ``models show`` and the model page print (artifact plots come apart)."""
    status = model.get("status") or {}
    return {
        **model_row(model, served),
        "artifactUri": status.get("artifactUri"),
        "manifestSha256": status.get("manifestSha256"),
        "labels": status.get("labels") or [],
        "qualityDelta": status.get("qualityDelta") or {},
        "hyperparameters": dig(status, "lineage.hyperparameters") or {},
        "codeVersion": dig(status, "lineage.codeVersion"),
        "trigger": dig(status, "lineage.trigger"),
        "registeredAt": status.get("registeredAt"),
        "spec": model.get("spec") or {},
    }


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two models side by side: metrics, size and latency, with which one is better."""
    rows = []
    for label, path, higher in COMPARED:
        left, right = dig(a.get("status"), path), dig(b.get("status"), path)
        better = None
        numbers = isinstance(left, int | float) and isinstance(right, int | float)
        if numbers and higher is not None and left != right:
            better = "a" if (left > right) == higher else "b"
        delta = right - left if numbers else None
        rows.append({"metric": label, "a": left, "b": right, "delta": delta, "better": better})
    return {"a": name_of(a), "b": name_of(b), "rows": rows}


def dataset_row(dataset: dict[str, Any]) -> dict[str, Any]:
    status = dataset.get("status") or {}
    return {
        "name": name_of(dataset),
        "source": dig(dataset, "spec.source.uri"),
        "rows": status.get("rows") or {},
        "labels": status.get("labels") or [],
        "labelCounts": status.get("labelCounts") or {},
        "checksum": status.get("checksum"),
        "artifactUri": status.get("artifactUri"),
        "ready": condition(dataset, "Ready"),
        "createdAt": dataset["metadata"].get("creationTimestamp"),
    }


def training_row(training: dict[str, Any]) -> dict[str, Any]:
    status = training.get("status") or {}
    return {
        "name": name_of(training),
        "dataset": dig(training, "spec.datasetRef.name"),
        "replicas": dig(training, "spec.replicas") or 1,
        "progress": status.get("progress") or {},
        "validationMetrics": status.get("validationMetrics") or {},
        "testMetrics": status.get("testMetrics") or {},
        "model": status.get("modelName"),
        "step": status.get("step"),
        "attempts": status.get("attempts"),
        "succeeded": condition(training, "Succeeded"),
        "startedAt": status.get("startedAt"),
        "completedAt": status.get("completedAt"),
    }


def finished(training: dict[str, Any]) -> bool:
    """A run is over when Succeeded is True or False (Unknown: running or retrying)."""
    return condition(training, "Succeeded")["status"] in ("True", "False")


def deployment_view(deployment: dict[str, Any]) -> dict[str, Any]:
    """Stable and canary, the live weight, rollout history, analysis and drift."""
    status = deployment.get("status") or {}
    steps = dig(deployment, "spec.rollout.steps") or []
    annotations = deployment["metadata"].get("annotations") or {}
    return {
        "name": name_of(deployment),
        "model": dig(deployment, "spec.model") or {},
        "stableModel": status.get("stableModel"),
        "canaryModel": status.get("canaryModel"),
        "canaryWeight": status.get("canaryWeight") or 0,
        "rolloutStep": status.get("rolloutStep"),
        "steps": [s.get("weight") for s in steps],
        "endpoint": status.get("endpoint"),
        "history": list(reversed(status.get("history") or [])),
        "analysis": status.get("analysis"),
        "challenge": status.get("challenge"),
        "drift": status.get("drift") or {},
        "driftThreshold": dig(deployment, "spec.drift.threshold"),
        "retrains": status.get("retrains") or {},
        "pausedByAction": bool(status.get("pausedByAction")),
        "lastAction": annotations.get("bertops.io/rollout-action"),
        "ready": condition(deployment, "Ready"),
        "progressing": condition(deployment, "Progressing"),
        "degraded": condition(deployment, "Degraded"),
        "drifted": condition(deployment, "Drifted"),
    }
