"""The prepare step's holdout: the newest share of a source's rows by time is held out of
every split into holdout.parquet (cleaned and label-checked like the rest), the same rows
on every run, nothing of it in train/validation/test, and an optional source that is not
there yet gives an empty holdout instead of an error."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bertops.api.artifacts import DATASET_MANIFEST, DatasetManifest, verify_folder
from bertops.api.dataset import BertDatasetStatus, Cleaning, DataSource
from bertops.api.results import PrepareDetails
from bertops.api.steps import StepResult
from bertops.trainer import run_step
from bertops.trainer.cleaning import clean_text
from bertops.trainer.holdout import HOLDOUT_FILE, held_count, parse_time
from tests.trainer.conftest import prepare_spec, tweet_slice

START = datetime(2026, 11, 1, tzinfo=UTC)
SPLIT_FILES = ("train.parquet", "validation.parquet", "test.parquet")


def cleaned(texts: Any) -> list[str]:
    """Texts as prepare writes them (MiniLM is uncased: lowercased)."""
    return [clean_text(t, Cleaning(), lowercase=True) for t in texts]


@pytest.fixture(scope="module")
def tweets(corpus: pd.DataFrame) -> pd.DataFrame:
    return tweet_slice(corpus, 100)  # 300 rows, 3 labels


@pytest.fixture(scope="module")
def feedback_rows(corpus: pd.DataFrame, tweets: pd.DataFrame) -> pd.DataFrame:
    """40 labelled feedback rows (none a duplicate once cleaned), one a minute, logged
    out of order."""
    others = tweet_slice(corpus, 40, seed=5)
    others["clean"] = cleaned(others["text"])
    others = others[~others["clean"].isin(cleaned(tweets["text"]))]
    others = others.drop_duplicates("clean").iloc[:40].reset_index(drop=True)
    others["time"] = [(START + timedelta(minutes=i)).isoformat() for i in range(len(others))]
    return others.sample(frac=1.0, random_state=1).reset_index(drop=True)


def _log(rows: pd.DataFrame, folder: Path) -> Path:
    """The gateway's feedback log layout: a folder of JSONL files."""
    folder.mkdir(parents=True, exist_ok=True)
    records = [
        {
            "time": r["time"],
            "requestId": f"r{i}",
            "index": 0,
            "text": r["text"],
            "label": r["label"],
        }
        for i, r in rows.iterrows()
    ]
    half = len(records) // 2
    for name, part in (("gw-a.jsonl", records[:half]), ("gw-b.jsonl", records[half:])):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    return folder


def _prepare(source: Path, output: Path, feedback: dict[str, Any]) -> StepResult:
    extra = {"format": "jsonl", "optional": True, **feedback}
    return run_step(prepare_spec(source, output, additionalSources=[extra]))


def _texts(folder: Path, *names: str) -> set[str]:
    return {t for name in names for t in pd.read_parquet(folder / name)["text"]}


def test_newest_rows_by_time_are_held_out_of_every_split(
    tweets: pd.DataFrame, feedback_rows: pd.DataFrame, minilm: Path, tmp_path: Path
) -> None:
    source = tmp_path / "tweets.csv"
    tweets.to_csv(source, index=False)
    log = _log(feedback_rows, tmp_path / "feedback")
    result = _prepare(source, tmp_path / "ds", {"uri": str(log), "holdoutFraction": 0.25})
    assert result.succeeded, result.message

    held = pd.read_parquet(tmp_path / "ds" / HOLDOUT_FILE)
    newest = feedback_rows.sort_values("time").iloc[-10:]  # ceil(0.25 x 40)
    assert held["text"].tolist() == newest["clean"].tolist()  # oldest of them first
    assert held["label_name"].tolist() == newest["label"].tolist()
    assert [datetime.fromisoformat(t) for t in held["time"]] == [
        datetime.fromisoformat(t) for t in newest["time"]
    ]
    assert set(held["source"]) == {"additionalSources[0]"}
    # The same columns as the splits (plus where and when), the dataset's label ids.
    test = pd.read_parquet(tmp_path / "ds" / "test.parquet")
    assert set(test.columns) < set(held.columns)
    labels = json.loads((tmp_path / "ds" / "labels.json").read_text())["label2id"]
    assert held["label"].tolist() == [labels[n] for n in held["label_name"]]

    in_splits = _texts(tmp_path / "ds", *SPLIT_FILES)
    assert not set(held["text"]) & in_splits
    older = set(feedback_rows["clean"]) - set(held["text"])
    assert older <= in_splits  # the older feedback is trained on
    assert isinstance(result.details, PrepareDetails)
    assert result.details.holdout_rows == 10
    assert result.details.holdout_uri == f"{tmp_path / 'ds'}/{HOLDOUT_FILE}"
    assert result.artifacts["holdout"] == result.details.holdout_uri
    assert result.details.rows is not None
    assert result.details.rows["total"] == 300 + 30
    # The manifest's sha256 covers the holdout file.
    manifest = DatasetManifest.model_validate_json((tmp_path / "ds" / DATASET_MANIFEST).read_text())
    assert HOLDOUT_FILE in {f.path for f in manifest.files}
    verify_folder(tmp_path / "ds", manifest.files)
    stats = manifest.stats["holdout"]
    assert stats["rows"] == 10 and stats["rowsPerSource"] == {"additionalSources[0]": 10}
    assert datetime.fromisoformat(stats["newest"]) == START + timedelta(minutes=39)


def test_holdout_is_deterministic(
    tweets: pd.DataFrame, feedback_rows: pd.DataFrame, minilm: Path, tmp_path: Path
) -> None:
    source = tmp_path / "tweets.csv"
    tweets.to_csv(source, index=False)
    log = _log(feedback_rows, tmp_path / "feedback")
    feedback = {"uri": str(log), "holdoutFraction": 0.3}
    first = _prepare(source, tmp_path / "a", feedback)
    second = _prepare(source, tmp_path / "b", feedback)
    assert first.succeeded and second.succeeded, (first.message, second.message)
    assert first.checksums == second.checksums
    held = [pd.read_parquet(tmp_path / d / HOLDOUT_FILE) for d in ("a", "b")]
    assert held[0].equals(held[1])
    for name in SPLIT_FILES:
        assert pd.read_parquet(tmp_path / "a" / name).equals(pd.read_parquet(tmp_path / "b" / name))


def test_rows_without_a_time_count_as_oldest(
    tweets: pd.DataFrame, feedback_rows: pd.DataFrame, minilm: Path, tmp_path: Path
) -> None:
    """A missing or unreadable time never puts a row into the holdout (while there are
    enough timed rows). Held-out rows are cleaned and label-checked like the rest: a
    duplicate of a text seen before is dropped, and so is a label that the rows left to
    split (which decide the label list) do not have."""
    rows = feedback_rows.sort_values("time").reset_index(drop=True)
    rows.loc[35, "time"] = None
    rows.loc[36, "time"] = "yesterday-ish"
    rows.loc[37, "text"] = tweets["text"].iloc[0]  # already in the main source
    rows.loc[38, "label"] = "sarcastic"  # only in the newest feedback
    source = tmp_path / "tweets.csv"
    tweets.to_csv(source, index=False)
    log = _log(rows, tmp_path / "feedback")
    result = _prepare(source, tmp_path / "ds", {"uri": str(log), "holdoutFraction": 0.1})
    assert result.succeeded, result.message
    held = pd.read_parquet(tmp_path / "ds" / HOLDOUT_FILE)
    # 39 rows survive cleaning -> ceil(3.9) = 4 newest: 33, 34, 38 and 39; 38's label
    # is not one of the dataset's.
    assert held["text"].tolist() == rows["clean"].iloc[[33, 34, 39]].tolist()
    assert isinstance(result.details, PrepareDetails)
    assert result.details.holdout_rows == 3
    assert result.details.labels == ["negative", "neutral", "positive"]
    assert result.details.dropped_rows == {"duplicate": 1, "unknownLabel": 1}
    in_splits = _texts(tmp_path / "ds", *SPLIT_FILES)
    assert {rows["clean"][35], rows["clean"][36]} <= in_splits


def test_optional_source_not_there_yet_gives_an_empty_holdout(
    tweets: pd.DataFrame, minilm: Path, tmp_path: Path
) -> None:
    source = tmp_path / "tweets.csv"
    tweets.to_csv(source, index=False)
    missing = _prepare(
        source, tmp_path / "ds", {"uri": str(tmp_path / "later"), "holdoutFraction": 0.2}
    )
    (tmp_path / "empty").mkdir()
    empty = _prepare(
        source, tmp_path / "ds2", {"uri": str(tmp_path / "empty"), "holdoutFraction": 0.2}
    )
    plain = run_step(prepare_spec(source, tmp_path / "plain"))
    for result, folder in ((missing, "ds"), (empty, "ds2")):
        assert result.succeeded, result.message
        assert isinstance(result.details, PrepareDetails)
        assert result.details.holdout_rows == 0
        assert len(pd.read_parquet(tmp_path / folder / HOLDOUT_FILE)) == 0
        # Nothing held out, nothing added: the same content as without the source.
        assert result.checksums == plain.checksums
    assert isinstance(plain.details, PrepareDetails)
    assert plain.details.holdout_rows is None and plain.details.holdout_uri is None
    assert not (tmp_path / "plain" / HOLDOUT_FILE).exists()


def test_a_holdout_source_without_times_is_bad_input(
    tweets: pd.DataFrame, minilm: Path, tmp_path: Path
) -> None:
    source = tmp_path / "tweets.csv"
    tweets.to_csv(source, index=False)
    result = run_step(prepare_spec(source, tmp_path / "ds", source={"holdoutFraction": 0.2}))
    assert not result.succeeded and result.exit_code == 2
    assert "no row has a parsable time in column 'time'" in result.message
    assert "timeColumn" in result.message
    assert not (tmp_path / "ds").exists()
    with pytest.raises(ValueError, match="not a textFolder"):
        DataSource(uri="texts", format="textFolder", holdout_fraction=0.1)
    with pytest.raises(ValueError, match=r"less than or equal to 0\.5"):
        DataSource(uri="f.jsonl", holdout_fraction=0.6)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-28T23:05:01.123+00:00", 1795907101.123),
        ("2026-11-28T23:05:01.123Z", 1795907101.123),
        ("2026-11-29T00:05:01.123+01:00", 1795907101.123),
        ("2026-11-28T23:05:01.123", 1795907101.123),  # naive: UTC
        ("1795907101.123", 1795907101.123),
        (1795907101, 1795907101.0),
        (pd.Timestamp("2026-11-28T23:05:01.123Z"), 1795907101.123),
        (np.datetime64("2026-11-28T23:05:01.123"), 1795907101.123),
        (np.datetime64("NaT"), math.nan),
        (None, math.nan),
        (float("nan"), math.nan),
        ("", math.nan),
        ("soon", math.nan),
        (True, math.nan),
    ],
)
def test_time_values(value: object, expected: float) -> None:
    got = parse_time(value)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_held_count_rounds_up_without_float_noise() -> None:
    assert held_count(0.1, 30) == 3  # 0.1 x 30 is 3.0000000000000004
    assert held_count(0.1, 31) == 4
    assert held_count(0.5, 1) == 1
    assert held_count(0.2, 0) == 0


def test_dataset_planner_copies_the_holdout_into_status() -> None:
    from bertops.operator.planners.dataset import prepared

    status = BertDatasetStatus()
    result = StepResult.model_validate(
        {
            "kind": "prepare",
            "name": "p",
            "succeeded": True,
            "artifacts": {"dataset": "/store/ds/g1", "holdout": "/store/ds/g1/holdout.parquet"},
            "checksums": {"dataset": "ab" * 32},
            "details": {"rows": {"total": 3}, "holdoutRows": 7},
        }
    )
    prepared(status, result, datetime.now(UTC))
    wire = status.to_wire()
    assert wire["holdoutUri"] == "/store/ds/g1/holdout.parquet" and wire["holdoutRows"] == 7
