"""Read the texts of one split of a prepared dataset artifact (written by the trainer's
``prepare`` step), after the shared sha256 verification of :mod:`bertops.api.artifacts`.

Used by the reference step (:mod:`bertops.server.monitor.reference`). The server may not
import the trainer, so this is a reader of the artifact's documented layout
(``<split>.parquet`` with ``text`` and ``label_name`` columns, ``bertops-dataset.json``),
not a copy of the trainer's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bertops.api.artifacts import DATASET_MANIFEST, ArtifactError, DatasetManifest, verify_manifest
from bertops.server.monitor import MonitorInputError


@dataclass(frozen=True)
class SplitSample:
    """Texts (and their dataset labels) of a seeded sample of one split."""

    texts: list[str]
    labels: list[str]
    indices: list[int]
    """Row numbers in the split, so a reference row can be traced back."""
    split_rows: int
    checksum: str


def sample_split(folder: Path, split: str, size: int, seed: int) -> SplitSample:
    """Up to ``size`` rows of ``split``, drawn without replacement with ``seed`` (the same
    artifact, size and seed give the same rows), in split order."""
    import pandas as pd

    try:
        manifest, _ = verify_manifest(
            folder, DatasetManifest, DATASET_MANIFEST, what="prepared dataset"
        )
    except ArtifactError as error:
        raise MonitorInputError(str(error)) from error
    path = folder / f"{split}.parquet"
    if not path.is_file():
        raise MonitorInputError(f"prepared dataset {folder} has no {split} split")
    frame = pd.read_parquet(path, columns=["text", "label_name"])
    if frame.empty:
        raise MonitorInputError(f"the {split} split of {folder} has no rows")
    chosen = frame.sample(n=min(size, len(frame)), random_state=seed).sort_index()
    return SplitSample(
        texts=[str(text) for text in chosen["text"]],
        labels=[str(label) for label in chosen["label_name"]],
        indices=[int(index) for index in chosen.index],
        split_rows=len(frame),
        checksum=manifest.checksum,
    )
