"""The ``prepare`` step: read a BertDataset source, clean, map labels, split (stratified,
seeded), tokenize, and write a content-addressed dataset artifact.

Called through :func:`bertops.trainer.steps.run_step` (CLI: ``bertops trainer prepare``).
Artifact layout (``output_uri``)::

    train.parquet validation.parquet test.parquet   text, label, label_name, input_ids, length
    holdout.parquet                                 the same + time, source (only when a
                                                    source has holdoutFraction)
    tokenizer/                                      the tokenizer that produced input_ids
    labels.json                                     {"labels": [...], "label2id": {...}}
    stats.json                                      rows, drops, token lengths, unknown rate
    bertops-dataset.json                            DatasetManifest (checksum, sha256 per file)

The checksum hashes the content (labels, tokenizer vocabulary, rows of every split in
order), never file bytes or timestamps, so the same inputs and seed give the same checksum.
The holdout is not part of it (nothing trains on it); the manifest's sha256 of every file
covers it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertops.api.artifacts import DATASET_MANIFEST, DatasetManifest, digest_folder
from bertops.api.dataset import BertDatasetSpec, Split
from bertops.api.steps import PrepareStep, StepResult
from bertops.trainer import artifacts_io, cleaning, holdout, models, prepare_report, sources
from bertops.trainer.errors import BadInputError
from bertops.trainer.progress import Progress

SPLITS = ("train", "validation", "test")
LABELS_FILE = "labels.json"
STATS_FILE = "stats.json"
TOKENIZER_DIR = "tokenizer"


def split_indices(labels: list[str], split: Split) -> dict[str, list[int]]:
    """Row indices per split. Stratified: every label is cut by the same fractions (at
    least one row per non-empty split, or :class:`BadInputError`). Seeded and deterministic."""
    rng = np.random.default_rng(split.seed)
    fractions = {"validation": split.validation, "test": split.test}
    wanted = ["train", *[name for name, frac in fractions.items() if frac > 0]]
    out: dict[str, list[int]] = {name: [] for name in SPLITS}
    groups: list[tuple[str, np.ndarray]]
    if split.stratify:
        by_label: dict[str, list[int]] = {}
        for index, label in enumerate(labels):
            by_label.setdefault(label, []).append(index)
        groups = [(label, np.array(by_label[label])) for label in sorted(by_label)]
    else:
        groups = [("", np.arange(len(labels)))]
    for label, indices in groups:
        shuffled = indices[rng.permutation(len(indices))]
        n = len(shuffled)
        if split.stratify and n < len(wanted):
            raise BadInputError(
                f"class {label!r} has {n} row(s), too few to appear in every split "
                f"({', '.join(wanted)}); the split would leave it empty. Add data, drop "
                "the class (spec.labels), or set split.stratify=false"
            )
        counts = {}
        for name, frac in fractions.items():
            counts[name] = int(n * frac + 0.5)
            if frac > 0 and split.stratify:
                counts[name] = max(1, counts[name])
        if n - sum(counts.values()) < 1:
            raise BadInputError(
                f"split fractions leave no training rows (class {label!r}, {n} rows)"
            )
        n_test, n_val = counts["test"], counts["validation"]
        out["test"].extend(shuffled[:n_test].tolist())
        out["validation"].extend(shuffled[n_test : n_test + n_val].tolist())
        out["train"].extend(shuffled[n_test + n_val :].tolist())
    # Mix the labels inside each split (same rng, so still deterministic).
    return {name: [idx[i] for i in rng.permutation(len(idx))] for name, idx in out.items()}


def check_split_labels(labels: list[str], names: list[str], parts: dict[str, list[int]]) -> None:
    """Every label must be learnable (in train) and nothing may be only in val/test."""
    in_train = {labels[i] for i in parts["train"]}
    for split_name in ("validation", "test"):
        unseen = sorted({labels[i] for i in parts[split_name]} - in_train)
        if unseen:
            raise BadInputError(
                f"label(s) {', '.join(map(repr, unseen))} in {split_name} but not in train; "
                "use split.stratify=true or add rows of those labels"
            )
    missing = [name for name in names if name not in in_train]
    if missing:
        raise BadInputError(
            f"class(es) {', '.join(map(repr, missing))} have no rows in train after the "
            "split; add data or drop them from spec.labels"
        )


@dataclass
class Tokenized:
    ids: list[list[int]]
    lengths: list[int]  # before truncation
    unknown: int
    tokens: int  # non-special tokens, the denominator of the unknown rate


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> Tokenized:
    """Ids truncated to max_length (keeping the final [SEP]); lengths before truncation."""
    if not texts:  # e.g. an empty holdout: fast tokenizers fail on an empty batch
        return Tokenized([], [], 0, 0)
    encoded = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    unk = tokenizer.unk_token_id
    ids, lengths, unknown, tokens = [], [], 0, 0
    for row in encoded:
        lengths.append(len(row))
        unknown += sum(1 for t in row if t == unk)
        tokens += sum(1 for t in row if t not in special or t == unk)
        ids.append(row if len(row) <= max_length else [*row[: max_length - 1], row[-1]])
    return Tokenized(ids, lengths, unknown, tokens)


def content_checksum(
    names: list[str], vocab: str, max_length: int, splits: dict[str, pd.DataFrame]
) -> str:
    digest = hashlib.sha256()
    header = {"labels": names, "vocab": vocab, "maxLength": max_length, "version": 1}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for name in SPLITS:
        digest.update(f"\n#{name}\n".encode())
        frame = splits[name]
        for text, label, ids in zip(frame["text"], frame["label"], frame["input_ids"], strict=True):
            digest.update(
                json.dumps([text, int(label), [int(i) for i in ids]], ensure_ascii=False).encode()
            )
            digest.update(b"\n")
    return digest.hexdigest()


@dataclass
class Tables:
    """The tokenized splits and what tokenizing them measured (for stats.json)."""

    splits: dict[str, pd.DataFrame]
    lengths: list[int]
    unknown: int
    tokens: int


def table(
    rows: pd.DataFrame, tokenizer: Any, max_length: int, label2id: dict[str, int]
) -> tuple[pd.DataFrame, Tokenized]:
    """The artifact's table of some cleaned rows (a split or the holdout): text, label id,
    label name, token ids and their count."""
    tok = tokenize(tokenizer, rows["text"].tolist(), max_length)
    frame = pd.DataFrame(
        {
            "text": rows["text"].tolist(),
            "label": np.array([label2id[x] for x in rows["label"]], dtype=np.int32),
            "label_name": rows["label"].tolist(),
            "input_ids": [np.array(ids, dtype=np.int32) for ids in tok.ids],
            "length": np.array([len(ids) for ids in tok.ids], dtype=np.int32),
        }
    )
    return frame, tok


def _tokenize_splits(
    frame: pd.DataFrame,
    parts: dict[str, list[int]],
    tokenizer: Any,
    max_length: int,
    label2id: dict[str, int],
    progress: Progress,
) -> Tables:
    out = Tables({}, [], 0, 0)
    for name in SPLITS:
        rows = frame.iloc[parts[name]]
        out.splits[name], tok = table(rows, tokenizer, max_length, label2id)
        out.lengths += tok.lengths
        out.unknown += tok.unknown
        out.tokens += tok.tokens
        progress.emit("progress", message=f"tokenized {name}", rows=len(rows))
    return out


def _base_tokenizer(spec: BertDatasetSpec) -> tuple[Any, bool]:
    """The base model's tokenizer (None when a WordPiece vocabulary is trained later)
    and whether the text is uncased."""
    tok_spec = spec.tokenizer
    if (tok_spec.base_model is None) == (tok_spec.train_word_piece is None):
        raise BadInputError("set exactly one of tokenizer.baseModel or tokenizer.trainWordPiece")
    if tok_spec.base_model is not None:
        tokenizer = models.load_tokenizer(models.tokenizer_folder(tok_spec.base_model))
        return tokenizer, models.is_uncased(tokenizer)
    assert tok_spec.train_word_piece is not None
    return None, tok_spec.train_word_piece.lowercase


def _label_names(
    spec: BertDatasetSpec, frame: pd.DataFrame, dropped: dict[str, int], read: sources.Sources
) -> list[str]:
    """The label list (the spec's, or the sorted labels of the rows to split), after
    checking there are rows for every one of them."""
    if frame.empty:
        reasons = ", ".join(f"{k}={v}" for k, v in dropped.items() if v) or "no rows in source"
        where = spec.source.uri + (" and additionalSources" if read.additional else "")
        raise BadInputError(f"no rows left after cleaning {where} ({reasons})")
    names = list(spec.labels) if spec.labels else sorted(frame["label"].unique().tolist())
    if len(names) < 2:
        raise BadInputError(f"classification needs at least 2 labels, found {names}")
    empty_classes = sorted(set(names) - set(frame["label"]))
    if empty_classes:
        raise BadInputError(
            f"class(es) {', '.join(map(repr, empty_classes))} have no rows after "
            "cleaning; add data or drop them from spec.labels"
        )
    return names


def _hold_out(
    held: holdout.Holdout | None,
    names: list[str],
    dropped: dict[str, int],
    tokenizer: Any,
    max_length: int,
) -> tuple[pd.DataFrame | None, dict[str, Any] | None]:
    """The holdout's table and its stats entry (None, None: no source has a holdout). Rows
    with a label the dataset does not have are dropped and counted like any unknown label."""
    if held is None:
        return None, None
    held, unknown = holdout.keep_labels(held, names)
    dropped["unknownLabel"] += unknown
    label2id = {name: i for i, name in enumerate(names)}
    rows, _ = table(held.rows, tokenizer, max_length, label2id)
    return holdout.annotate(rows, held), holdout.stats(held, names)


def run_prepare(step: PrepareStep, progress: Progress) -> StepResult:
    spec = step.dataset
    tok_spec = spec.tokenizer
    tokenizer, uncased = _base_tokenizer(spec)
    read = sources.read_sources(spec, progress)
    lowercase = cleaning.resolve_lowercase(spec.cleaning, uncased)
    frame, dropped = cleaning.clean_frame(read.frame, spec.cleaning, lowercase, spec.labels)
    # Held out after cleaning (so de-duplicated against every source) and before the
    # label list and the split are decided, which the held-out rows must not influence.
    frame, held = holdout.split_off(frame, spec)
    names = _label_names(spec, frame, dropped, read)
    row_labels = frame["label"].tolist()
    parts = split_indices(row_labels, spec.split)
    check_split_labels(row_labels, names, parts)

    if tokenizer is None:
        assert tok_spec.train_word_piece is not None
        progress.message("training a WordPiece vocabulary on the train split")
        train_texts = [frame["text"].iloc[i] for i in parts["train"]]
        tokenizer = models.train_wordpiece(
            train_texts, tok_spec.train_word_piece, tok_spec.max_length
        )
    label2id = {name: i for i, name in enumerate(names)}
    tables = _tokenize_splits(frame, parts, tokenizer, tok_spec.max_length, label2id, progress)
    held_table, held_stats = _hold_out(held, names, dropped, tokenizer, tok_spec.max_length)
    unknown_rate = tables.unknown / tables.tokens if tables.tokens else 0.0
    stats = prepare_report.dataset_stats(
        spec, read, tables.splits, tables.lengths, unknown_rate, names, dropped, lowercase
    )
    if held_stats is not None:
        stats["holdout"] = held_stats
    vocab = models.vocab_digest(tokenizer)
    checksum = content_checksum(names, vocab, tok_spec.max_length, tables.splits)
    tokenizer_info = {
        "vocabSha256": vocab,
        "vocabSize": len(tokenizer),
        "maxLength": tok_spec.max_length,
        "uncased": uncased,
        "source": (
            tok_spec.base_model.describe() if tok_spec.base_model is not None else "trainWordPiece"
        ),
    }
    with artifacts_io.staged_folder(step.output_uri) as folder:
        for name in SPLITS:
            tables.splits[name].to_parquet(folder / f"{name}.parquet", index=False)
        if held_table is not None:
            held_table.to_parquet(folder / holdout.HOLDOUT_FILE, index=False)
        tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
        artifacts_io.write_json(folder / LABELS_FILE, {"labels": names, "label2id": label2id})
        artifacts_io.write_json(folder / STATS_FILE, stats)
        manifest = DatasetManifest(
            checksum=checksum,
            labels=names,
            rows=stats["rows"],
            files=digest_folder(folder),
            stats=stats,
            tokenizer=tokenizer_info,
            created_at=datetime.now(UTC),
        )
        (folder / DATASET_MANIFEST).write_text(manifest.model_dump_json(by_alias=True, indent=2))
    if held_table is None:
        return prepare_report.step_result(step, stats, checksum, read, None, None)
    holdout_uri = artifacts_io.join(step.output_uri, holdout.HOLDOUT_FILE)
    return prepare_report.step_result(step, stats, checksum, read, holdout_uri, len(held_table))


def load_prepared(folder: Path) -> tuple[DatasetManifest, dict[str, Any]]:
    """The manifest and label map of a prepared dataset folder, verified by sha256."""
    manifest = artifacts_io.read_verified_manifest(
        folder, DATASET_MANIFEST, DatasetManifest, "prepared dataset"
    )
    label_map = artifacts_io.read_json(folder / LABELS_FILE, "prepared dataset")
    return manifest, label_map


def read_split(folder: Path, split: str) -> pd.DataFrame:
    path = folder / f"{split}.parquet"
    if not path.is_file():
        raise BadInputError(f"prepared dataset {folder} has no {split} split")
    return pd.read_parquet(path)
