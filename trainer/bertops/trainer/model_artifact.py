"""The one writer of model artifacts: weights (by a callback), the tokenizer, the label
map, the metrics document and the ``bertops-model.json`` manifest (sha256 of every file,
written last), published atomically through :func:`bertops.trainer.artifacts_io.staged_folder`.

Called by :mod:`bertops.trainer.train` (a fine-tuned model) and
:mod:`bertops.trainer.compress.publish` (a compressed variant), so both kinds of artifact
have the same layout and the same guarantees::

    model.safetensors | model.onnx, config.json   weights and transformers config
    tokenizer.json tokenizer_config.json ...      the tokenizer that produced the ids
    labels.json metrics.json                      label map; metrics of the producing step
    bertops-model.json                            ModelManifest: files, recipe, lineage
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bertops.api.artifacts import MODEL_MANIFEST, ModelManifest, digest_folder
from bertops.trainer import artifacts_io

LABELS_FILE = "labels.json"
METRICS_FILE = "metrics.json"


def code_version() -> str:
    """bertops version plus the git commit when run from a checkout (or the env's)."""
    if env := os.environ.get("BERTOPS_CODE_VERSION"):
        return env
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = f"bertops {version('bertops')}"
    except PackageNotFoundError:
        text = "bertops (not installed)"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return f"{text} git:{commit}" if commit else text


def write(
    uri: str,
    manifest: ModelManifest,
    *,
    save_weights: Callable[[Path], None],
    tokenizer: Any,
    metrics: dict[str, Any],
    measure: Callable[[Path], dict[str, Any]] | None = None,
) -> tuple[ModelManifest, str]:
    """Write and publish the artifact at ``uri``; returns the final manifest (``files``,
    ``created_at`` and what ``measure`` found in the written folder filled in) and the
    sha256 of its bytes. Nothing is published when any part fails."""
    with artifacts_io.staged_folder(uri) as folder:
        save_weights(folder)
        tokenizer.save_pretrained(str(folder))
        artifacts_io.write_json(
            folder / LABELS_FILE,
            {
                "labels": manifest.labels,
                "label2id": {name: i for i, name in enumerate(manifest.labels)},
            },
        )
        artifacts_io.write_json(folder / METRICS_FILE, metrics)
        measured = measure(folder) if measure is not None else {}
        final = manifest.model_copy(
            update={
                "files": digest_folder(folder),
                "created_at": datetime.now(UTC),
                "measurements": {**manifest.measurements, **measured},
            }
        )
        text = final.model_dump_json(by_alias=True, indent=2, exclude_none=True)
        # The manifest is what readers trust: written last, over the finished files.
        (folder / MODEL_MANIFEST).write_text(text)
    return final, hashlib.sha256(text.encode()).hexdigest()
