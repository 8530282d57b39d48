"""Cleaning and splitting are pure functions: options, drop reasons, determinism."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from bertops.api.dataset import Cleaning, Split
from bertops.trainer.cleaning import clean_frame, clean_text, resolve_lowercase
from bertops.trainer.errors import BadInputError
from bertops.trainer.prepare import check_split_labels, split_indices


def test_clean_text_options() -> None:
    # Fullwidth "Hello" (escaped: the literal letters look like ASCII) becomes ASCII.
    raw = "\uff28\uff45\uff4c\uff4c\uff4f  <b>world</b> &amp; see https://x.io/a?b=1 @bob\n ok"
    assert (
        clean_text(raw, Cleaning(), lowercase=False)
        == "Hello <b>world</b> &amp; see https://x.io/a?b=1 @bob ok"
    )
    everything = Cleaning(strip_html=True, strip_urls=True, strip_mentions=True)
    assert clean_text(raw, everything, lowercase=True) == "hello world & see ok"
    # An e-mail address is not a mention.
    assert clean_text("mail me@x.org", everything, lowercase=False) == "mail me@x.org"


def test_lowercase_follows_tokenizer_in_auto() -> None:
    assert resolve_lowercase(Cleaning(), tokenizer_uncased=True)
    assert not resolve_lowercase(Cleaning(), tokenizer_uncased=False)
    assert resolve_lowercase(Cleaning(lowercase="always"), tokenizer_uncased=False)
    assert not resolve_lowercase(Cleaning(lowercase="never"), tokenizer_uncased=True)


def test_clean_frame_counts_every_drop_reason() -> None:
    frame = pd.DataFrame(
        {
            "text": ["good", "  ", "x", "a" * 50, "good", "fine day", "no label", "other"],
            "label": ["pos", "pos", "neg", "neg", "pos", "neg", "", "spam"],
        }
    )
    kept, dropped = clean_frame(
        frame, Cleaning(min_chars=2, max_chars=20), lowercase=False, labels=["neg", "pos"]
    )
    assert kept.to_dict("list") == {"text": ["good", "fine day"], "label": ["pos", "neg"]}
    assert dropped == {
        "missingLabel": 1,
        "unknownLabel": 1,
        "empty": 1,
        "tooShort": 1,
        "tooLong": 1,
        "duplicate": 1,
    }


def test_stratified_split_is_seeded_and_proportional() -> None:
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    split = Split(train=0.8, validation=0.1, test=0.1, seed=1)
    first, again = split_indices(labels, split), split_indices(labels, split)
    assert first == again
    assert split_indices(labels, Split(seed=2)) != first
    assert sorted(i for part in first.values() for i in part) == list(range(100))
    for name, share in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        counts = Counter(labels[i] for i in first[name])
        assert counts == {"a": round(60 * share), "b": round(30 * share), "c": round(10 * share)}


def test_split_that_would_empty_a_class_is_refused() -> None:
    with pytest.raises(BadInputError, match="class 'rare' has 2 row"):
        split_indices(["common"] * 20 + ["rare"] * 2, Split())


def test_label_only_in_test_is_refused() -> None:
    labels = ["a"] * 20 + ["b"] * 20 + ["c"]
    split = next(
        s
        for seed in range(100)
        if 40 in split_indices(labels, s := Split(stratify=False, seed=seed))["test"]
    )
    parts = split_indices(labels, split)
    with pytest.raises(BadInputError, match="'c' in test but not in train"):
        check_split_labels(labels, ["a", "b", "c"], parts)
