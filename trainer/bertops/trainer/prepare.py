"""The ``prepare`` step: read a BertDataset source, clean, map labels, split (stratified,
seeded), tokenize, and write a content-addressed dataset artifact.

Called through :func:`bertops.trainer.steps.run_step` (CLI: ``bertops trainer prepare``).
Artifact layout (``output_uri``)::

    train.parquet validation.parquet test.parquet   text, label, label_name, input_ids, length
    tokenizer/                                      the tokenizer that produced input_ids
    labels.json                                     {"labels": [...], "label2id": {...}}
    stats.json                                      rows, drops, token lengths, unknown rate
    bertops-dataset.json                            DatasetManifest (checksum, sha256 per file)

The checksum hashes the content (labels, tokenizer vocabulary, rows of every split in
order), never file bytes or timestamps, so the same inputs and seed give the same checksum.
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
from bertops.api.dataset import Split
from bertops.api.steps import PrepareDetails, PrepareStep, StepResult
from bertops.trainer import artifacts_io, cleaning, models, sources
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


def _percentile(values: list[int], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else 0.0


def run_prepare(step: PrepareStep, progress: Progress) -> StepResult:
    spec = step.dataset
    tok_spec = spec.tokenizer
    if (tok_spec.base_model is None) == (tok_spec.train_word_piece is None):
        raise BadInputError("set exactly one of tokenizer.baseModel or tokenizer.trainWordPiece")
    tokenizer: Any = None
    if tok_spec.base_model is not None:
        tokenizer = models.load_tokenizer(models.tokenizer_folder(tok_spec.base_model))
        uncased = models.is_uncased(tokenizer)
    else:
        assert tok_spec.train_word_piece is not None
        uncased = tok_spec.train_word_piece.lowercase
    read = sources.read_sources(spec, progress)
    raw = read.main
    lowercase = cleaning.resolve_lowercase(spec.cleaning, uncased)
    frame, dropped = cleaning.clean_frame(read.frame, spec.cleaning, lowercase, spec.labels)
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
    splits: dict[str, pd.DataFrame] = {}
    lengths: list[int] = []
    unknown = tokens = 0
    for name in SPLITS:
        rows = frame.iloc[parts[name]]
        tok = tokenize(tokenizer, rows["text"].tolist(), tok_spec.max_length)
        lengths += tok.lengths
        unknown += tok.unknown
        tokens += tok.tokens
        splits[name] = pd.DataFrame(
            {
                "text": rows["text"].tolist(),
                "label": np.array([label2id[x] for x in rows["label"]], dtype=np.int32),
                "label_name": rows["label"].tolist(),
                "input_ids": [np.array(ids, dtype=np.int32) for ids in tok.ids],
                "length": np.array([len(ids) for ids in tok.ids], dtype=np.int32),
            }
        )
        progress.emit("progress", message=f"tokenized {name}", rows=len(rows))
    vocab = models.vocab_digest(tokenizer)
    checksum = content_checksum(names, vocab, tok_spec.max_length, splits)
    rows = {name: len(splits[name]) for name in SPLITS}
    rows["total"] = sum(rows.values())
    per_split_label = {
        name: {label: int((splits[name]["label_name"] == label).sum()) for label in names}
        for name in SPLITS
    }
    label_counts = {label: sum(per_split_label[s][label] for s in SPLITS) for label in names}
    dropped_nonzero = {k: v for k, v in dropped.items() if v}
    stats: dict[str, Any] = {
        "source": {
            "uri": spec.source.uri,
            "format": raw.format,
            "rowsRead": raw.rows_read,
            "invalidByteSequences": raw.invalid_byte_sequences,
            "encodingErrors": spec.source.encoding_errors,
        },
        "additionalSources": [
            {
                "uri": source.uri,
                "format": extra.format,
                "rowsRead": extra.rows_read,
                "invalidByteSequences": extra.invalid_byte_sequences,
                "encodingErrors": source.encoding_errors,
            }
            for source, extra in zip(spec.additional_sources or (), read.additional, strict=True)
        ],
        "sourceRows": read.rows_read(),
        "rows": rows,
        "rowsPerSplitAndLabel": per_split_label,
        "labelCounts": label_counts,
        "droppedRows": dropped_nonzero,
        "lowercased": lowercase,
        "tokenLength": {
            "p50": _percentile(lengths, 50),
            "p90": _percentile(lengths, 90),
            "p95": _percentile(lengths, 95),
            "p99": _percentile(lengths, 99),
            "max": max(lengths),
            "maxLength": tok_spec.max_length,
            "truncated": sum(1 for n in lengths if n > tok_spec.max_length),
        },
        "unknownTokenRate": unknown / tokens if tokens else 0.0,
    }
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
            splits[name].to_parquet(folder / f"{name}.parquet", index=False)
        tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
        artifacts_io.write_json(folder / LABELS_FILE, {"labels": names, "label2id": label2id})
        artifacts_io.write_json(folder / STATS_FILE, stats)
        manifest = DatasetManifest(
            checksum=checksum,
            labels=names,
            rows=rows,
            files=digest_folder(folder),
            stats=stats,
            tokenizer=tokenizer_info,
            created_at=datetime.now(UTC),
        )
        (folder / DATASET_MANIFEST).write_text(manifest.model_dump_json(by_alias=True, indent=2))
    details = PrepareDetails(
        artifact_uri=step.output_uri,
        checksum=checksum,
        short_checksum=checksum[:12],
        rows=rows,
        labels=names,
        num_labels=len(names),
        label_counts=label_counts,
        dropped_rows=dropped_nonzero,
        token_length_p50=stats["tokenLength"]["p50"],
        token_length_p95=stats["tokenLength"]["p95"],
        unknown_token_rate=stats["unknownTokenRate"],
        invalid_byte_sequences=read.invalid_byte_sequences,
        source_rows=read.rows_read(),
    )
    metrics = {f"rows.{k}": float(v) for k, v in rows.items()}
    metrics["unknownTokenRate"] = float(stats["unknownTokenRate"])
    metrics["tokenLengthP95"] = float(stats["tokenLength"]["p95"])
    return StepResult(
        kind="prepare",
        name=step.name,
        succeeded=True,
        metrics=metrics,
        artifacts={"dataset": step.output_uri},
        checksums={"dataset": checksum},
        details=details,
    )


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
