"""Text cleaning and row filtering for dataset preparation (pure functions, no I/O).

Called by :mod:`bertops.trainer.prepare` with the spec's :class:`~bertops.api.dataset.Cleaning`.
The order is fixed (unicode, HTML, URLs, mentions, whitespace, case) so the same spec
always yields the same text, which the dataset checksum depends on.
"""

from __future__ import annotations

import html
import re
import unicodedata

import pandas as pd

from bertops.api.dataset import Cleaning

_HTML_TAG = re.compile(r"<[^>]{0,2000}>")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@\w+")
_SPACE = re.compile(r"\s+")

# Drop reasons, in the order they are checked (a row counts for the first that applies).
DROP_REASONS = ("missingLabel", "unknownLabel", "empty", "tooShort", "tooLong", "duplicate")


def clean_text(text: str, cleaning: Cleaning, lowercase: bool) -> str:
    if cleaning.normalize_unicode:
        text = unicodedata.normalize("NFKC", text)
    if cleaning.strip_html:
        # Tags go, entities are decoded; a tag becomes a space so words do not merge.
        text = html.unescape(_HTML_TAG.sub(" ", text))
    if cleaning.strip_urls:
        text = _URL.sub(" ", text)
    if cleaning.strip_mentions:
        text = _MENTION.sub(" ", text)
    if cleaning.collapse_whitespace:
        text = _SPACE.sub(" ", text).strip()
    if lowercase:
        text = text.lower()
    return text


def resolve_lowercase(cleaning: Cleaning, tokenizer_uncased: bool) -> bool:
    if cleaning.lowercase == "always":
        return True
    if cleaning.lowercase == "never":
        return False
    return tokenizer_uncased


def clean_frame(
    frame: pd.DataFrame, cleaning: Cleaning, lowercase: bool, labels: list[str] | None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Cleaned rows (text, label) in input order and the dropped-row count per reason.
    Other columns of ``frame`` (e.g. a row's source and time) are kept for the rows kept."""
    dropped = dict.fromkeys(DROP_REASONS, 0)
    texts = [clean_text(t, cleaning, lowercase) for t in frame["text"].tolist()]
    seen: set[str] = set()
    keep_text: list[str] = []
    keep_label: list[str] = []
    kept: list[int] = []
    allowed = set(labels) if labels else None
    for position, (text, label) in enumerate(zip(texts, frame["label"].tolist(), strict=True)):
        if not label:
            reason = "missingLabel"
        elif allowed is not None and label not in allowed:
            reason = "unknownLabel"
        elif not text:
            reason = "empty"
        elif len(text) < cleaning.min_chars:
            reason = "tooShort"
        elif len(text) > cleaning.max_chars:
            reason = "tooLong"
        elif cleaning.deduplicate and text in seen:
            reason = "duplicate"
        else:
            seen.add(text)
            keep_text.append(text)
            keep_label.append(label)
            kept.append(position)
            continue
        dropped[reason] += 1
    out = pd.DataFrame({"text": keep_text, "label": keep_label})
    for column in frame.columns.drop(["text", "label"]):
        out[column] = frame[column].iloc[kept].to_numpy()
    return out, dropped
