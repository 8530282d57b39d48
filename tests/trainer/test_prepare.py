"""The prepare step on real tweets: every input format, determinism of the checksum, the
artifact's files, manifest and statistics, and a WordPiece vocabulary for Chinese."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bertops.api.artifacts import DATASET_MANIFEST, DatasetManifest, verify_folder
from bertops.api.results import PrepareDetails
from bertops.trainer import run_step
from tests.trainer.conftest import prepare_spec, tweet_slice


@pytest.fixture(scope="module")
def tweets(corpus: pd.DataFrame) -> pd.DataFrame:
    return tweet_slice(corpus, 100)  # 300 rows, 3 labels


def _write(frame: pd.DataFrame, folder: Path, fmt: str) -> Path:
    if fmt == "csv":
        path = folder / "tweets.csv"
        frame.to_csv(path, index=False)
    elif fmt == "jsonl":
        path = folder / "tweets.jsonl"
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif fmt == "parquet":
        path = folder / "tweets.parquet"
        frame.to_parquet(path, index=False)
    else:
        path = folder / "texts"
        for i, row in frame.iterrows():
            (path / row["label"]).mkdir(parents=True, exist_ok=True)
            (path / row["label"] / f"{i:04d}.txt").write_text(row["text"], encoding="utf-8")
    return path


def test_same_content_same_checksum_in_every_format(
    tweets: pd.DataFrame, minilm: Path, tmp_path: Path
) -> None:
    checksums = {}
    for fmt in ("csv", "jsonl", "parquet", "textFolder"):
        source = _write(tweets, tmp_path, fmt)
        result = run_step(prepare_spec(source, tmp_path / f"out-{fmt}"))
        assert result.succeeded, result.message
        checksums[fmt] = result.checksums["dataset"]
    # The text folder orders rows by file name, not like the table: a different split.
    tables = {checksums[f] for f in ("csv", "jsonl", "parquet")}
    assert len(tables) == 1


def test_prepare_is_deterministic_and_seed_changes_split(
    tweets: pd.DataFrame, minilm: Path, tmp_path: Path
) -> None:
    source = _write(tweets, tmp_path, "csv")
    first = run_step(prepare_spec(source, tmp_path / "a"))
    second = run_step(prepare_spec(source, tmp_path / "b"))
    other = run_step(prepare_spec(source, tmp_path / "c", split={"seed": 8}))
    assert first.succeeded and second.succeeded and other.succeeded
    assert first.checksums == second.checksums
    assert other.checksums["dataset"] != first.checksums["dataset"]
    assert (
        pd.read_parquet(tmp_path / "a" / "test.parquet")["text"].tolist()
        != pd.read_parquet(tmp_path / "c" / "test.parquet")["text"].tolist()
    )
    # Running again over an existing artifact replaces it whole.
    again = run_step(prepare_spec(source, tmp_path / "a"))
    assert again.checksums == first.checksums
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c", "tweets.csv"]


def test_artifact_layout_manifest_and_stats(
    tweets: pd.DataFrame, minilm: Path, tmp_path: Path
) -> None:
    frame = pd.concat(
        [
            tweets,
            pd.DataFrame(
                {
                    "text": [
                        tweets["text"][0],
                        "   ",
                        "Visit <i>HTTPS://t.co/x</i> now @Someone",
                        "no label here",
                    ],
                    "label": [tweets["label"][0], "neutral", "positive", ""],
                }
            ),
        ],
        ignore_index=True,
    )
    source = _write(frame, tmp_path, "csv")
    out = tmp_path / "ds"
    result = run_step(
        prepare_spec(
            source, out, cleaning={"stripHtml": True, "stripUrls": True, "stripMentions": True}
        )
    )
    assert result.succeeded, result.message
    assert sorted(p.name for p in out.iterdir()) == [
        DATASET_MANIFEST,
        "labels.json",
        "stats.json",
        "test.parquet",
        "tokenizer",
        "train.parquet",
        "validation.parquet",
    ]
    manifest = DatasetManifest.model_validate_json((out / DATASET_MANIFEST).read_text())
    assert verify_folder(out, manifest.files) == []
    assert manifest.checksum == result.checksums["dataset"]
    assert manifest.labels == ["negative", "neutral", "positive"]
    assert manifest.rows == {"train": 211, "validation": 45, "test": 45, "total": 301}
    details = result.details
    assert isinstance(details, PrepareDetails)
    assert details.dropped_rows == {"duplicate": 1, "empty": 1, "missingLabel": 1}
    assert details.label_counts == {"negative": 100, "neutral": 100, "positive": 101}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rowsPerSplitAndLabel"]["test"] == {"negative": 15, "neutral": 15, "positive": 15}
    assert stats["lowercased"] is True  # MiniLM is uncased
    assert 5 < stats["tokenLength"]["p50"] <= stats["tokenLength"]["p95"]
    assert 0 <= stats["unknownTokenRate"] < 0.01
    texts = pd.concat(
        pd.read_parquet(out / f"{s}.parquet") for s in ("train", "validation", "test")
    )["text"].tolist()
    assert "visit now" in texts
    train = pd.read_parquet(out / "train.parquet")
    assert list(train.columns) == ["text", "label", "label_name", "input_ids", "length"]
    assert train["length"].max() <= 48
    assert all(ids[0] == 101 and ids[-1] == 102 for ids in train["input_ids"])  # [CLS] .. [SEP]


# Chinese product reviews; \uff0c is the fullwidth comma (NFKC turns it into ",").
CHINESE = [
    "这个手机的屏幕很好看\uff0c电池也很耐用",
    "快递很快\uff0c包装完好\uff0c非常满意",
    "质量太差了\uff0c用了两天就坏了",
    "客服态度很差\uff0c再也不买了",
    "性价比很高\uff0c推荐购买",
    "声音太小\uff0c屏幕有划痕\uff0c不满意",
]


def test_wordpiece_vocabulary_for_chinese(minilm: Path, tmp_path: Path) -> None:
    rows = [
        {"text": f"{text}{i}", "label": "pos" if j in (0, 1, 4) else "neg"}
        for i in range(12)
        for j, text in enumerate(CHINESE)
    ]
    source = tmp_path / "zh.jsonl"
    pd.DataFrame(rows).to_json(source, orient="records", lines=True, force_ascii=False)
    trained = run_step(
        prepare_spec(
            source,
            tmp_path / "zh",
            tokenizer={"trainWordPiece": {"vocabSize": 200, "minFrequency": 1}, "maxLength": 32},
        )
    )
    english = run_step(prepare_spec(source, tmp_path / "zh-en"))
    assert trained.succeeded and english.succeeded, (trained.message, english.message)
    assert isinstance(trained.details, PrepareDetails)
    assert isinstance(english.details, PrepareDetails)
    assert trained.details.unknown_token_rate is not None
    assert english.details.unknown_token_rate is not None
    assert trained.details.unknown_token_rate < 0.01
    assert english.details.unknown_token_rate > 0.3  # MiniLM barely knows Chinese
    manifest = DatasetManifest.model_validate_json((tmp_path / "zh" / DATASET_MANIFEST).read_text())
    assert manifest.tokenizer["source"] == "trainWordPiece"
    assert manifest.tokenizer["vocabSize"] <= 200


def _feedback(tweets: pd.DataFrame, folder: Path) -> Path:
    """Labelled feedback as a JSONL file with its own column names."""
    rows = tweets.iloc[:30].rename(columns={"text": "input", "label": "truth"})
    rows["input"] = "feedback " + rows["input"]  # not duplicates of the main rows
    path = folder / "feedback.jsonl"
    rows.to_json(path, orient="records", lines=True, force_ascii=False)
    return path


@pytest.mark.parametrize(
    ("case", "extra", "expected"),
    [
        ("none", [], {"source": 300}),
        ("jsonl", ["feedback"], {"source": 300, "additionalSources[0]": 30}),
        (
            "twice",
            ["feedback", "feedback"],  # the same rows twice: de-duplicated after appending
            {"source": 300, "additionalSources[0]": 30, "additionalSources[1]": 30},
        ),
        ("a folder of replicas' logs", ["folder"], {"source": 300, "additionalSources[0]": 30}),
        (
            "optional, not there yet",
            ["optional-missing"],
            {"source": 300, "additionalSources[0]": 0},
        ),
        ("optional, empty folder", ["optional-empty"], {"source": 300, "additionalSources[0]": 0}),
        ("missing", ["missing"], None),
        ("bad column", ["no-columns"], None),
    ],
)
def test_additional_sources_are_appended_before_cleaning(
    tweets: pd.DataFrame,
    minilm: Path,
    tmp_path: Path,
    case: str,
    extra: list[str],
    expected: dict[str, int] | None,
) -> None:
    source = _write(tweets[["text", "label"]], tmp_path, "csv")
    feedback = _feedback(tweets, tmp_path)
    replicas = tmp_path / "replicas"  # one feedback log per gateway replica, one still empty
    replicas.mkdir()
    lines = feedback.read_text().splitlines(keepends=True)
    (replicas / "gw-a.jsonl").write_text("".join(lines[:10]))
    (replicas / "gw-b.jsonl").write_text("".join(lines[10:]))
    (replicas / "gw-c.jsonl").write_text("")
    (tmp_path / "empty").mkdir()
    columns = {"textColumn": "input", "labelColumn": "truth"}
    entries = {
        "feedback": {"uri": str(feedback), **columns},
        "folder": {"uri": str(replicas), "format": "jsonl", **columns},
        "optional-missing": {"uri": str(tmp_path / "later"), "format": "jsonl", "optional": True},
        "optional-empty": {"uri": str(tmp_path / "empty"), "format": "jsonl", "optional": True},
        "missing": {"uri": str(tmp_path / "gone.jsonl")},
        "no-columns": {"uri": str(feedback)},  # default text/label columns are not there
    }
    result = run_step(
        prepare_spec(source, tmp_path / "ds", additionalSources=[entries[e] for e in extra])
    )
    if expected is None:
        assert not result.succeeded and result.exit_code == 2, case
        assert result.message.startswith("additionalSources[0]"), result.message
        assert not (tmp_path / "ds").exists()  # no half artifact
        return
    assert result.succeeded, result.message
    assert isinstance(result.details, PrepareDetails)
    assert result.details.source_rows == expected
    added = sum(v for k, v in expected.items() if k != "source") // len(extra) if extra else 0
    assert result.details.rows is not None
    assert result.details.rows["total"] == 300 + added
    texts = pd.read_parquet(tmp_path / "ds" / "train.parquet")["text"].tolist()
    assert any(t.startswith("feedback ") for t in texts) == bool(added)
    stats = json.loads((tmp_path / "ds" / "stats.json").read_text())
    assert [s["format"] for s in stats["additionalSources"]] == ["jsonl"] * len(extra)
