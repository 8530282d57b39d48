"""Builders for the drift monitor tests: prediction-log rows drawn from a seeded
distribution (embeddings, descriptors, labels), written as a server's log or sealed as a
reference folder exactly as the reference step writes one, and drift step specs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bertops.api.artifacts import digest_folder
from bertops.server.monitor.reference import (
    REFERENCE_FILE,
    REFERENCE_MANIFEST,
    ReferenceManifest,
)

START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LABELS = ("negative", "neutral", "positive")


def rows(
    count: int,
    seed: int,
    *,
    shift: float = 0.0,
    dim: int = 16,
    model: str = "tiny-v1",
    embeddings: bool = True,
) -> list[dict[str, Any]]:
    """Prediction-log rows; ``shift`` moves the embeddings' mean and lengthens the texts
    (a changed input world), 0 draws from the reference distribution."""
    rng = np.random.default_rng(seed)
    out = []
    for index in range(count):
        chars = int(rng.integers(20, 120) * (1 + shift))
        row: dict[str, Any] = {
            "time": (START + timedelta(milliseconds=index)).isoformat(timespec="milliseconds"),
            "model": model,
            "modelVersion": model,
            "requestId": f"r{index}",
            "index": 0,
            "textSha256": "0" * 64,
            "chars": chars,
            "tokens": max(3, chars // 4),
            "unkRate": 0.0,
            "nonAscii": round(float(rng.random() * 0.02), 6),
            "label": str(rng.choice(LABELS)),
            "confidence": round(float(rng.uniform(0.4, 1.0)), 6),
            "latencyMs": 5.0,
        }
        if embeddings:
            vector = rng.normal(shift, 1.0, dim)
            row["embedding"] = [round(float(x), 4) for x in vector]
        out.append(row)
    return out


def write_log(folder: Path, lines: list[dict[str, Any]], name: str = "server-0.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with path.open("a", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps(line) + "\n")
    return path


def write_reference(folder: Path, lines: list[dict[str, Any]], model: str = "tiny-v1") -> Path:
    """A sealed reference folder (the reference step's layout) holding ``lines``."""
    write_log(folder, lines, REFERENCE_FILE)
    dims = {len(line.get("embedding") or []) for line in lines}
    manifest = ReferenceManifest(
        model_name=model,
        model_version=model,
        dataset_checksum="0" * 64,
        split="validation",
        seed=0,
        rows=len(lines),
        embedding_dim=dims.pop() if len(dims) == 1 else 0,
        files=digest_folder(folder),
    )
    (folder / REFERENCE_MANIFEST).write_text(manifest.model_dump_json(by_alias=True))
    return folder


def drift_spec(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "kind": "drift",
        "name": "drift-test",
        "referenceUri": str(tmp_path / "reference"),
        "predictionsUri": str(tmp_path / "predictions"),
        "modelName": "tiny-v1",
        "windowSize": 150,
        "minRows": 50,
        "outputUri": str(tmp_path / "report"),
        "resultUri": str(tmp_path / "result.json"),
    }
    spec.update(overrides)
    return spec
