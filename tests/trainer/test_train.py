"""Real training of a tiny random BERT on tweets: loss falls, the majority baseline is
beaten, the artifact verifies, evaluate agrees, a killed run resumes at epoch 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bertops.api.artifacts import MODEL_MANIFEST, ModelManifest, verify_folder
from bertops.api.results import EvaluateDetails, TrainDetails
from bertops.api.steps import ExitCode
from bertops.trainer import run_step
from bertops.trainer.epochs import CRASH_AFTER_EPOCH_ENV
from tests.trainer.conftest import prepare_spec, train_spec, tweet_slice

pytestmark = pytest.mark.slow


def test_training_reduces_loss_and_beats_majority_baseline(trained: tuple[Path, Any]) -> None:
    _, result = trained
    history = result.details.history
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1]["trainLoss"] < 0.5 * history[0]["trainLoss"]
    baseline = result.details.majority_baseline_accuracy
    assert baseline == pytest.approx(0.5, abs=0.02)
    assert result.metrics["test.accuracy"] > baseline + 0.15
    assert result.metrics["test.macroF1"] > 0.6
    for key in ("loss", "accuracy", "macroF1", "precision", "recall"):
        assert f"validation.{key}" in result.metrics and f"test.{key}" in result.metrics


def test_model_artifact_layout_manifest_and_lineage(
    trained: tuple[Path, Any], prepared: Path
) -> None:
    folder, result = trained
    assert sorted(p.name for p in folder.iterdir()) == [
        MODEL_MANIFEST,
        "config.json",
        "labels.json",
        "metrics.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    manifest = ModelManifest.model_validate_json((folder / MODEL_MANIFEST).read_text())
    assert verify_folder(folder, manifest.files) == []
    assert manifest.labels == ["negative", "positive"] and manifest.max_length == 48
    lineage = manifest.lineage
    dataset = json.loads((prepared / "bertops-dataset.json").read_text())
    assert lineage.dataset_checksum == dataset["checksum"] == result.checksums["dataset"]
    assert lineage.training_run == "train-test" and lineage.dataset == "tweets"
    assert lineage.base_model == "config:L2-H64-A2"
    assert lineage.hyperparameters is not None
    assert lineage.hyperparameters["learningRate"] == "0.001"
    assert lineage.code_version and lineage.code_version.startswith("bertops")
    assert manifest.metrics["test"]["accuracy"] == result.metrics["test.accuracy"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert sum(map(sum, metrics["test"]["confusionMatrix"])) == 60
    assert set(metrics["test"]["perClass"]) == {"negative", "positive"}
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert not folder.with_name("tiny.ckpt").exists()  # checkpoints go once the model is in


def test_evaluate_scores_the_artifact(
    trained: tuple[Path, Any], prepared: Path, tmp_path: Path
) -> None:
    folder, result = trained
    evaluated = run_step(
        {
            "kind": "evaluate",
            "name": "eval",
            "modelUri": str(folder),
            "datasetUri": str(prepared),
            "split": "test",
        }
    )
    assert evaluated.succeeded, evaluated.message
    assert evaluated.metrics["accuracy"] == result.metrics["test.accuracy"]
    assert evaluated.metrics["loss"] == pytest.approx(result.metrics["test.loss"], rel=1e-4)
    assert isinstance(evaluated.details, EvaluateDetails)
    assert evaluated.details.retokenized is False
    # A changed file is refused before anything is loaded.
    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    (tampered / "labels.json").write_text('{"labels": ["positive", "negative"]}')
    refused = run_step(
        {"kind": "evaluate", "name": "eval", "modelUri": str(tampered), "datasetUri": str(prepared)}
    )
    assert refused.exit_code == ExitCode.BAD_INPUT
    assert "sha256 mismatch for labels.json" in refused.message


def test_evaluate_refuses_labels_the_model_does_not_know(
    trained: tuple[Path, Any], corpus: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "three.csv"
    tweet_slice(corpus, 10).to_csv(source, index=False)
    assert run_step(prepare_spec(source, tmp_path / "three")).succeeded
    result = run_step(
        {
            "kind": "evaluate",
            "name": "eval",
            "modelUri": str(trained[0]),
            "datasetUri": str(tmp_path / "three"),
        }
    )
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "label(s) 'neutral' of the dataset are unknown to the model" in result.message


def test_finished_run_started_again_reuses_its_artifact(
    trained: tuple[Path, Any], prepared: Path
) -> None:
    folder, result = trained
    before = (folder / MODEL_MANIFEST).read_bytes()
    again = run_step(train_spec(prepared, folder))
    assert again.succeeded
    assert isinstance(again.details, TrainDetails)
    assert again.details.reused is True
    assert again.metrics["test.accuracy"] == result.metrics["test.accuracy"]
    assert (folder / MODEL_MANIFEST).read_bytes() == before


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_killed_run_resumes_from_its_checkpoint(prepared: Path, tmp_path: Path) -> None:
    spec = train_spec(prepared, tmp_path / "model", name="resume-test", epochs=3)
    spec_file = tmp_path / "train.json"
    spec_file.write_text(json.dumps(spec))
    command = [sys.executable, "-m", "bertops.trainer.cli", "train", "--spec", str(spec_file)]
    crashed = subprocess.run(
        command,
        env={**os.environ, CRASH_AFTER_EPOCH_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert crashed.returncode == -9, crashed.stderr  # SIGKILL: no cleanup ran
    events = _events(crashed.stdout)
    assert [e["epoch"] for e in events if e.get("event") == "checkpoint"] == [1]
    assert not (tmp_path / "model").exists()
    assert sorted(p.name for p in (tmp_path / "model.ckpt").iterdir()) == ["epoch-0001"]

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr
    events = _events(resumed.stdout)
    started = [e["epoch"] for e in events if e.get("message", "").endswith("started")]
    assert started == [2, 3]
    assert [e["epoch"] for e in events if e.get("event") == "epoch"] == [2, 3]
    assert any("resumed from the checkpoint of epoch 1" in e.get("message", "") for e in events)
    result = events[-1]
    assert result["succeeded"] and result["details"]["resumedFromEpoch"] == 1
    assert [h["epoch"] for h in result["details"]["history"]] == [1, 2, 3]

    # Resuming restores weights, optimizer, schedule and RNG: the same weights as a run
    # that was never interrupted.
    straight = run_step(train_spec(prepared, tmp_path / "straight", name="straight", epochs=3))
    assert isinstance(straight.details, TrainDetails)
    assert straight.details.rank_weight_digests == result["details"]["rankWeightDigests"]


def test_early_stopping_keeps_the_best_epoch(prepared: Path, tmp_path: Path) -> None:
    result = run_step(
        train_spec(
            prepared,
            tmp_path / "model",
            name="early",
            epochs=12,
            earlyStoppingPatience=1,
            earlyStoppingMetric="loss",
            scheduler="cosine",
        )
    )
    assert result.succeeded, result.message
    details = result.details
    assert isinstance(details, TrainDetails)
    assert details.early_stopped is True
    assert details.epochs_run is not None
    assert details.epochs_run < 12
    assert details.best_epoch == details.epochs_run - 1
    assert details.history is not None
    best = details.history[details.best_epoch - 1]["validation"]
    # The artifact holds the best epoch's weights, not the last epoch's.
    assert result.metrics["validation.loss"] == pytest.approx(best["loss"], rel=1e-5)
