"""BertDataset: a prepared, versioned text dataset (source, cleaning, tokenizer, split).

The operator turns it into a ``prepare`` step (``bertops trainer prepare``) whose result
fills the status: rows, label counts, a content checksum and the artifact URI.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from bertops.api import reasons
from bertops.api.meta import (
    API_VERSION,
    ApiModel,
    LocalObjectReference,
    Rule,
    StatusBase,
    StatusModel,
    cel,
    exactly_one,
)
from bertops.api.sources import CREDENTIALS_DESCRIPTION, ModelSource

# Condition types and reasons the operator sets on a BertDataset.
READY = "Ready"
REASON_PREPARING = "Preparing"
REASON_PREPARED = "Prepared"
REASON_INVALID_DATA = "InvalidData"
REASON_STEP_FAILED = reasons.REASON_STEP_FAILED
REASON_INVALID_SPEC = reasons.REASON_INVALID_SPEC


NO_HOLDOUT_IN_TEXT_FOLDER = Rule(
    "!has(self.holdoutFraction) || self.format != 'textFolder'",
    "holdoutFraction needs a table source with a time column, not a textFolder",
    lambda s: s.holdout_fraction is None or s.format != "textFolder",
)


class DataSource(ApiModel):
    model_config = cel(NO_HOLDOUT_IN_TEXT_FOLDER)

    uri: str = Field(
        min_length=1,
        description="fsspec URI or path of a CSV/JSONL/Parquet file or a folder of text files.",
    )
    format: Literal["auto", "csv", "jsonl", "parquet", "textFolder"] = Field(
        default="auto",
        description="auto: from the file extension; textFolder: one sub-folder per label.",
    )
    text_column: str = Field(default="text", min_length=1)
    label_column: str = Field(default="label", min_length=1)
    encoding: str = Field(default="utf-8")
    encoding_errors: Literal["strict", "replace", "ignore"] = Field(
        default="strict", description="What to do with bytes that are not valid in the encoding."
    )
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None, description=CREDENTIALS_DESCRIPTION
    )
    optional: bool = Field(
        default=False,
        description="A missing file or folder reads as no rows instead of failing the step "
        "(e.g. feedback that has not arrived yet).",
    )
    holdout_fraction: float | None = Field(
        default=None,
        gt=0,
        le=0.5,
        description="The newest share of this source's rows, by its time column, is held "
        "out of every split and written apart as a frozen evaluation set (the dataset's "
        "holdout file): ceil(fraction x rows) rows after cleaning; rows without a parsable "
        "time count as oldest.",
    )
    time_column: str = Field(
        default="time",
        min_length=1,
        description="With holdoutFraction: the column of ISO 8601 times (or epoch seconds) "
        "that orders the rows.",
    )


class Cleaning(ApiModel):
    normalize_unicode: bool = Field(default=True, description="NFKC normalisation.")
    collapse_whitespace: bool = True
    strip_html: bool = False
    strip_urls: bool = False
    strip_mentions: bool = False
    lowercase: Literal["auto", "always", "never"] = Field(
        default="auto", description="auto: lowercase when the tokenizer is uncased."
    )
    min_chars: int = Field(default=1, ge=0)
    max_chars: int = Field(default=10000, ge=1)
    deduplicate: bool = True

    model_config = cel(
        Rule(
            "self.minChars <= self.maxChars",
            "minChars must be <= maxChars",
            lambda s: s.min_chars <= s.max_chars,
        ),
    )


class Split(ApiModel):
    """Stratified train/validation/test fractions; they must sum to 1."""

    model_config = cel(
        Rule(
            "self.train + self.validation + self.test >= 0.999 && "
            "self.train + self.validation + self.test <= 1.001",
            "split ratios train + validation + test must sum to 1",
            lambda s: 0.999 <= s.train + s.validation + s.test <= 1.001,
        ),
    )

    train: float = Field(default=0.8, gt=0, lt=1)
    validation: float = Field(default=0.1, ge=0, lt=1)
    test: float = Field(default=0.1, ge=0, lt=1)
    seed: int = Field(default=42, ge=0)
    stratify: bool = True


class WordPieceTraining(ApiModel):
    """Train a WordPiece vocabulary on the training split (e.g. Chinese text)."""

    vocab_size: int = Field(default=8000, ge=100, le=250000)
    min_frequency: int = Field(default=2, ge=1)
    lowercase: bool = True


class Tokenizer(ApiModel):
    model_config = cel(
        Rule(
            "has(self.baseModel) != has(self.trainWordPiece)",
            "set exactly one of tokenizer.baseModel or tokenizer.trainWordPiece",
            lambda s: exactly_one(s, "base_model", "train_word_piece"),
        ),
    )

    base_model: ModelSource | None = Field(default=None, description="Use this model's tokenizer.")
    train_word_piece: WordPieceTraining | None = None
    max_length: int = Field(default=128, ge=8, le=4096)


class BertDatasetSpec(ApiModel):
    source: DataSource
    additional_sources: list[DataSource] | None = Field(
        default=None,
        max_length=8,
        description="Read after source and appended to it, each in its own format (e.g. the "
        "labelled feedback a BertDeployment collected, added by a retraining).",
    )
    labels: list[str] | None = Field(
        default=None,
        min_length=2,
        description="Label names in id order; rows with other labels are dropped. "
        "Default: the sorted labels found in the data.",
    )
    cleaning: Cleaning = Field(default_factory=Cleaning)
    split: Split = Field(default_factory=Split)
    tokenizer: Tokenizer
    output_uri: str | None = Field(
        default=None, description="Where to write the artifact (default: the operator's store)."
    )


class RowCounts(StatusModel):
    train: int = 0
    validation: int = 0
    test: int = 0
    total: int = 0


class BertDatasetStatus(StatusBase):
    artifact_uri: str | None = None
    checksum: str | None = Field(default=None, description="sha256 of the prepared content.")
    short_checksum: str | None = Field(default=None, description="First 12 hex digits.")
    rows: RowCounts | None = None
    labels: list[str] | None = None
    num_labels: int | None = None
    label_counts: dict[str, int] | None = None
    dropped_rows: dict[str, int] | None = Field(
        default=None, description="Rows dropped, by reason."
    )
    token_length_p50: float | None = None
    token_length_p95: float | None = None
    unknown_token_rate: float | None = None
    holdout_uri: str | None = Field(
        default=None,
        description="The frozen evaluation set held out of every split (the newest rows of "
        "the sources with holdoutFraction); unset when no source asks for one.",
    )
    holdout_rows: int | None = Field(
        default=None, description="Rows in the holdout file (0: the sources had none yet)."
    )
    prepared_at: datetime | None = None
    step: str | None = Field(default=None, description="Name of the step that prepared it.")
    attempts: int | None = Field(
        default=None,
        ge=1,
        description="Step attempts started for observedGeneration (exit codes 1 and 3 are "
        "retried with backoff, up to the operator's limit).",
    )


class BertDataset(ApiModel):
    """The whole object as the operator reads it (metadata kept as a plain dict)."""

    model_config = {"extra": "ignore"}

    api_version: str = API_VERSION
    kind: Literal["BertDataset"] = "BertDataset"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: BertDatasetSpec
    status: BertDatasetStatus = Field(default_factory=BertDatasetStatus)
