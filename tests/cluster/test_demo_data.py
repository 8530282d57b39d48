"""The demo's data split: in-domain airline tweets for training, shifted technology
tweets for evaluation and traffic; balanced, disjoint, seeded, stdlib CSV."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from bertops.cluster import demo_data

AIRLINE_TEXTS = [
    "@united my bag is lost again",
    "@JetBlue thanks for the upgrade",
    "@SouthwestAir gate?",
]
TECH_TEXTS = ["the new iPhone battery dies", "Google self-driving car spotted", "love my MacBook"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@united flight 123 delayed again", "airline"),
        ("@USAirways where is my luggage", "airline"),
        ("my iPhone6 screen cracked @Apple", "tech"),
        ("self-driving cars will change everything", "tech"),
        ("driverless trucks next", "tech"),
        ("@united wifi kills my iPhone battery", None),  # both: ambiguous, unused
        ("#DeflateGate Brady knew", None),
        ("pineapple pizza", None),  # 'apple' only as a whole word
    ],
)
def test_topic(text: str, expected: str | None) -> None:
    assert demo_data.topic(text) == expected


def _corpus(path: Path, per_label: int) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentiment", "confidence", "text"])
        for label in demo_data.LABELS:
            for i in range(per_label):
                for j, base in enumerate(AIRLINE_TEXTS + TECH_TEXTS):
                    writer.writerow([label, "0.9", f"{base} {label} {i} {j}"])
                writer.writerow([label, "0.3", f"@united unsure {label} {i}"])  # low confidence
            writer.writerow(["", "1", "@united no label"])
    return path


def _rows(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [(r["text"], r["label"]) for r in csv.DictReader(handle)]


def test_write_datasets_is_balanced_disjoint_and_seeded(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus.csv", 20)  # 60 airline and 60 tech rows per label
    sizes = {
        "train_per_label": 30,
        "in_domain_stream_per_label": 10,
        "shifted_eval_per_label": 20,
        "shifted_stream_per_label": 25,
    }
    first = demo_data.write_datasets(tmp_path / "a", corpus=corpus, **sizes)
    again = demo_data.write_datasets(tmp_path / "b", corpus=corpus, **sizes)
    other = demo_data.write_datasets(tmp_path / "c", corpus=corpus, seed=1, **sizes)
    files = ("original", "in_domain_stream", "shifted_eval", "shifted_stream")
    rows = {name: _rows(getattr(first, name)) for name in files}
    expected = {"original": 30, "in_domain_stream": 10, "shifted_eval": 20, "shifted_stream": 25}
    for name, count in expected.items():
        assert Counter(label for _, label in rows[name]) == dict.fromkeys(demo_data.LABELS, count)
    topics = {name: {demo_data.topic(t) for t, _ in rows[name]} for name in files}
    assert topics["original"] == topics["in_domain_stream"] == {"airline"}
    assert topics["shifted_eval"] == topics["shifted_stream"] == {"tech"}
    texts = [t for name in files for t, _ in rows[name]]
    assert len(texts) == len(set(texts))  # disjoint
    assert all("unsure" not in t for t in texts)  # below min_confidence
    assert rows == {name: _rows(getattr(again, name)) for name in files}
    assert rows["original"] != _rows(other.original)
    assert demo_data.read_labelled(first.shifted_eval) == (
        [t for t, _ in rows["shifted_eval"]],
        [label for _, label in rows["shifted_eval"]],
    )


def test_asking_for_more_than_the_corpus_holds_says_so(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus.csv", 2)
    with pytest.raises(ValueError, match="negative rows"):
        demo_data.write_datasets(tmp_path / "out", corpus=corpus, train_per_label=100)


def test_the_real_corpus_holds_the_default_split(tmp_path: Path) -> None:
    paths = demo_data.write_datasets(tmp_path)
    assert len(_rows(paths.original)) == 900 and len(_rows(paths.shifted_stream)) == 300
