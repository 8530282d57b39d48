"""The challenge step end to end: a stable tiny model (the session's trained one) against a
candidate retrained on its data plus labelled feedback whose newest half was held out;
the report's rows and accuracies must equal what plain transformers predicts with each
model's own files, and bad inputs fail with a reason a person can act on."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from bertops.api.steps import ChallengeDetails, PrepareDetails, StepResult
from bertops.trainer import run_step
from bertops.trainer.challenge import REPORT_FILE
from bertops.trainer.holdout import HOLDOUT_FILE
from tests.trainer.conftest import prepare_spec, train_spec, tweet_slice

FEEDBACK_ROWS = 60


@pytest.fixture(scope="module")
def retraining(
    corpus: pd.DataFrame, binary_csv: Path, minilm: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The stable model's data plus 60 feedback rows, the newest half held out."""
    folder = tmp_path_factory.mktemp("retraining")
    seen = set(pd.read_csv(binary_csv)["text"])
    fresh = tweet_slice(corpus, 80, ("negative", "positive"), seed=9)
    fresh = fresh[~fresh["text"].isin(seen)].iloc[:FEEDBACK_ROWS].reset_index(drop=True)
    start = datetime(2026, 11, 28, tzinfo=UTC)
    log = folder / "feedback"
    log.mkdir()
    with (log / "gw-a.jsonl").open("w") as handle:
        for n, (text, label) in enumerate(zip(fresh["text"], fresh["label"], strict=True)):
            time = (start + timedelta(seconds=n)).isoformat()
            record = {"time": time, "text": text, "label": label, "correct": False}
            handle.write(json.dumps(record) + "\n")
    feedback = {"uri": str(log), "format": "jsonl", "optional": True, "holdoutFraction": 0.5}
    result = run_step(prepare_spec(binary_csv, folder / "ds", additionalSources=[feedback]))
    assert result.succeeded, result.message
    assert isinstance(result.details, PrepareDetails)
    assert result.details.holdout_rows == FEEDBACK_ROWS // 2
    return folder / "ds"


@pytest.fixture(scope="module")
def candidate(retraining: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weaker model on the retraining dataset: one epoch, another seed."""
    output = tmp_path_factory.mktemp("candidate") / "tiny-retrained"
    result = run_step(train_spec(retraining, output, name="retrain", epochs=1, seed=11))
    assert result.succeeded, result.message
    return output


def _spec(stable: Path, candidate: Path, test: Path, out: Path, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "challenge",
        "name": "challenge-test",
        "stableModelUri": str(stable),
        "candidateModelUri": str(candidate),
        "testUri": str(test),
        "outputUri": str(out),
        **extra,
    }


@torch.no_grad()
def correct_by_transformers(model_dir: Path, texts: list[str], truth: list[str]) -> list[bool]:
    """Per row, whether the model predicts the true label: transformers' own loading,
    tokenizer and forward pass, one row at a time (no padding)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    names = json.loads((model_dir / "labels.json").read_text())["labels"]
    max_length = json.loads((model_dir / "bertops-model.json").read_text())["maxLength"]
    out = []
    for text, label in zip(texts, truth, strict=True):
        batch = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
        out.append(names[int(model(**batch).logits.argmax(-1))] == label)
    return out


def _expected(stable: Path, candidate: Path, frame: pd.DataFrame) -> dict[str, Any]:
    texts, truth = frame["text"].tolist(), frame["label_name"].tolist()
    s = correct_by_transformers(stable, texts, truth)
    c = correct_by_transformers(candidate, texts, truth)
    return {
        "rows": len(frame),
        "stableAccuracy": sum(s) / len(s),
        "candidateAccuracy": sum(c) / len(c),
        "bothCorrect": sum(a and b for a, b in zip(s, c, strict=True)),
        "candidateOnly": sum(b and not a for a, b in zip(s, c, strict=True)),
        "stableOnly": sum(a and not b for a, b in zip(s, c, strict=True)),
        "bothWrong": sum(not a and not b for a, b in zip(s, c, strict=True)),
    }


def test_challenge_scores_both_models_on_both_frozen_sets(
    trained: tuple[Path, Any], prepared: Path, retraining: Path, candidate: Path, tmp_path: Path
) -> None:
    stable, _ = trained
    holdout_uri = retraining / HOLDOUT_FILE
    result = run_step(
        _spec(stable, candidate, prepared, tmp_path / "out", holdoutUri=str(holdout_uri))
    )
    assert result.succeeded, result.message
    assert isinstance(result.details, ChallengeDetails)
    got: dict[str, dict[str, Any]] = {
        s.set: s.model_dump(by_alias=True, exclude_none=True) for s in result.details.sets or []
    }
    assert list(got) == ["testSplit", "heldBackFeedback"]
    test = pd.read_parquet(prepared / "test.parquet")
    held = pd.read_parquet(holdout_uri)
    assert len(held) == FEEDBACK_ROWS // 2
    for name, frame in (("testSplit", test), ("heldBackFeedback", held)):
        expected = _expected(stable, candidate, frame)
        entry = got[name]
        assert entry["availableRows"] == len(frame)
        for key, value in expected.items():
            assert entry[key] == pytest.approx(value), (name, key)
    # The two models differ (else the paired counts would say nothing).
    assert result.details.stable_model != result.details.candidate_model
    report = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert result.details.sets is not None
    assert report["sets"] == [s.model_dump(mode="json", by_alias=True) for s in result.details.sets]
    assert report["stableModel"]["uri"] == str(stable)
    assert result.details.report_uri == f"{tmp_path / 'out'}/{REPORT_FILE}"
    assert result.metrics["heldBackFeedback.rows"] == FEEDBACK_ROWS // 2
    # What the operator reads back from a termination message parses whole.
    again = StepResult.model_validate_json(result.compact_json())
    assert again.details == result.details


def test_sets_larger_than_max_rows_are_the_same_seeded_sample(
    trained: tuple[Path, Any], prepared: Path, retraining: Path, candidate: Path, tmp_path: Path
) -> None:
    stable, _ = trained
    spec = _spec(
        stable,
        candidate,
        prepared,
        tmp_path / "out",
        holdoutUri=str(retraining / HOLDOUT_FILE),
        maxRows=12,
    )
    first, second = run_step(spec), run_step({**spec, "outputUri": str(tmp_path / "again")})
    assert first.succeeded and second.succeeded, (first.message, second.message)
    assert isinstance(first.details, ChallengeDetails)
    assert isinstance(second.details, ChallengeDetails)
    assert first.details.sets == second.details.sets
    assert first.details.sets is not None
    for entry in first.details.sets:
        assert entry.available_rows is not None
        assert entry.rows == 12 and entry.available_rows > 12
        paired = entry.both_correct + entry.candidate_only + entry.stable_only + entry.both_wrong
        assert paired == 12
        assert entry.stable_accuracy == (entry.both_correct + entry.stable_only) / 12
        assert entry.candidate_accuracy == (entry.both_correct + entry.candidate_only) / 12


def test_no_holdout_is_a_set_of_zero_rows(
    trained: tuple[Path, Any], prepared: Path, candidate: Path, tmp_path: Path
) -> None:
    stable, _ = trained
    result = run_step(_spec(stable, candidate, prepared, tmp_path / "out"))
    assert result.succeeded, result.message
    assert isinstance(result.details, ChallengeDetails)
    assert result.details.sets is not None
    held = result.details.sets[1]
    assert held.set == "heldBackFeedback" and held.rows == 0
    assert held.stable_accuracy is None and held.candidate_accuracy is None
    assert "heldBackFeedback.stableAccuracy" not in result.metrics


def test_bad_model_uri_fails_with_a_readable_reason(
    trained: tuple[Path, Any], prepared: Path, tmp_path: Path
) -> None:
    """Through the CLI: exit code 2 (bad input, never retried) and the result as the last
    line, naming which model cannot be used."""
    from bertops.trainer.cli import app

    stable, _ = trained
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(_spec(stable, tmp_path / "nowhere", prepared, tmp_path / "out")))
    run = CliRunner().invoke(app, ["challenge", "--spec", str(spec)])
    assert run.exit_code == 2, run.output
    result = StepResult.model_validate_json(run.output.strip().splitlines()[-1])
    assert result.kind == "challenge" and not result.succeeded
    assert result.reason == "InvalidInput"
    assert result.message.startswith("candidate model: ")
    assert str(tmp_path / "nowhere") in result.message
    assert not (tmp_path / "out").exists()


def test_tampered_model_and_missing_test_split_are_bad_input(
    trained: tuple[Path, Any], prepared: Path, tmp_path: Path
) -> None:
    import shutil

    stable, _ = trained
    tampered = tmp_path / "tampered"
    shutil.copytree(stable, tampered)
    (tampered / "labels.json").write_text('{"labels": ["x", "y"]}')
    broken = run_step(_spec(tampered, stable, prepared, tmp_path / "out"))
    assert not broken.succeeded and broken.exit_code == 2
    assert broken.message.startswith("stable model: ") and "labels.json" in broken.message

    no_split = tmp_path / "dataset"
    shutil.copytree(prepared, no_split)
    (no_split / "test.parquet").unlink()
    missing = run_step(_spec(stable, stable, no_split, tmp_path / "out"))
    assert not missing.succeeded and missing.exit_code == 2
    assert "test.parquet" in missing.message, missing.message
