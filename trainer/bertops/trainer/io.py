"""Reading a BertDataset source (CSV, JSONL, Parquet or a folder of text files) into a
frame of raw ``text`` and ``label`` strings (plus the raw ``time`` values of a source with
a holdout, see :mod:`bertops.trainer.holdout`).

Called by :mod:`bertops.trainer.prepare`. Everything a user can get wrong here (missing
file, unknown format, missing column, bytes that are not valid in the declared encoding)
raises :class:`~bertops.trainer.errors.BadInputError` with a message that says what to fix.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO

import pandas as pd
from fsspec.core import url_to_fs

from bertops.api.dataset import DataSource
from bertops.trainer.errors import BadInputError

_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
REPLACEMENT = "\ufffd"


@dataclass
class RawData:
    frame: pd.DataFrame  # columns: text, label (str)
    format: str
    rows_read: int
    invalid_byte_sequences: int = 0
    notes: list[str] = field(default_factory=list)


def detect_format(source: DataSource, is_dir: bool) -> str:
    if source.format != "auto":
        return source.format
    if is_dir:
        return "textFolder"
    suffixes = PurePosixPath(source.uri).suffixes
    suffix = (
        suffixes[-2]
        if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1
        else (suffixes[-1] if suffixes else "")
    )
    fmt = _FORMATS.get(suffix.lower())
    if fmt is None:
        raise BadInputError(
            f"cannot tell the format of {source.uri} from its extension {suffix!r}; "
            "set source.format to csv, jsonl, parquet or textFolder"
        )
    return fmt


def decode(data: bytes, source: DataSource, where: str) -> tuple[str, int]:
    """Text and the number of invalid byte sequences, per source.encodingErrors."""
    try:
        if source.encoding_errors == "strict":
            return data.decode(source.encoding), 0
        text = data.decode(source.encoding, errors=source.encoding_errors)
    except UnicodeDecodeError as error:
        bad = data[error.start : error.start + 4].hex(" ")
        raise BadInputError(
            f"{where}: bytes {bad} at offset {error.start} are not valid {source.encoding}; "
            "fix the file, set source.encoding, or set source.encodingErrors to "
            "'replace' or 'ignore'"
        ) from error
    except LookupError as error:
        raise BadInputError(f"unknown encoding {source.encoding!r}") from error
    # Invalid sequences = replacement characters that were not in the data already.
    replaced = data.decode(source.encoding, errors="replace").count(REPLACEMENT) - (
        data.decode(source.encoding, errors="ignore").count(REPLACEMENT)
    )
    return text, replaced


def _columns(frame: pd.DataFrame, source: DataSource, where: str) -> pd.DataFrame:
    missing = [c for c in (source.text_column, source.label_column) if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns)) or "none"
        raise BadInputError(
            f"{where}: column(s) {', '.join(missing)} not found (columns: {found}); "
            "set source.textColumn / source.labelColumn"
        )
    out = pd.DataFrame(
        {
            "text": frame[source.text_column],
            "label": frame[source.label_column],
        }
    )
    if source.holdout_fraction is not None:
        # Raw values, parsed by the holdout split; a file without the column has no
        # parsable times (its rows count as oldest), which the split reports when no
        # row of the source has one.
        column = source.time_column
        out["time"] = frame[column] if column in frame.columns else None

    def to_str(value: object) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float) and value.is_integer():
            return str(int(value))  # a numeric label column read as float: 1.0 -> "1"
        return str(value)

    out["text"] = out["text"].map(to_str)
    out["label"] = out["label"].map(to_str).str.strip()
    return out.reset_index(drop=True)


def read_source(source: DataSource) -> RawData:
    """One source: a file, a folder of text files (``textFolder``), or a folder of files
    of one format (``csv``/``jsonl``/``parquet`` set explicitly: every file of that format
    in it, in name order, e.g. one feedback log per gateway replica). A missing
    ``optional`` source, or an optional folder without such files, reads as no rows."""
    fs, path = url_to_fs(source.uri)
    if not fs.exists(path):
        if source.optional:
            return _empty(source, "it does not exist (yet)")
        raise BadInputError(f"data source {source.uri} does not exist")
    is_dir = bool(fs.isdir(path))
    fmt = detect_format(source, is_dir)
    if fmt == "textFolder":
        if source.holdout_fraction is not None:
            raise BadInputError(
                f"data source {source.uri} is a text folder: it has no time column to "
                "hold out its newest rows by; remove holdoutFraction"
            )
        return _read_text_folder(fs, path, source)
    if not is_dir:
        return _read_file(fs, path, source, fmt, source.uri)
    files = sorted(
        found
        for found in fs.find(path)
        if _FORMATS.get(PurePosixPath(found).suffix.lower()) == fmt
        and not PurePosixPath(found).name.startswith(".")
    )
    if not files:
        if source.optional:
            return _empty(source, f"the folder holds no {fmt} files (yet)")
        raise BadInputError(f"data source {source.uri} is a folder without {fmt} files")
    parts = [_read_file(fs, found, source, fmt, found) for found in files]
    frame = pd.concat([part.frame for part in parts], ignore_index=True)
    return RawData(
        frame,
        fmt,
        sum(part.rows_read for part in parts),
        sum(part.invalid_byte_sequences for part in parts),
        notes=[f"{len(files)} {fmt} files read from {source.uri}"],
    )


def _empty(source: DataSource, why: str) -> RawData:
    frame = pd.DataFrame({"text": pd.Series(dtype=str), "label": pd.Series(dtype=str)})
    return RawData(frame, source.format, 0, notes=[f"optional source {source.uri}: {why}"])


def _read_jsonl(handle: IO[bytes], source: DataSource, where: str) -> RawData:
    """A JSONL file line by line, keeping only the text, label and time fields: a large
    feedback log is never held whole (nor every field of each row) in memory."""
    wanted = tuple(dict.fromkeys((source.text_column, source.label_column, source.time_column)))
    columns: dict[str, list[object]] = {name: [] for name in wanted}
    present: set[str] = set()
    first_keys: list[str] = []
    rows, bad = 0, 0
    for number, raw in enumerate(handle, start=1):
        text, replaced = decode(raw, source, f"{where} line {number}")
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise BadInputError(f"{where} is not valid jsonl: line {number}: {error}") from error
        if not isinstance(record, dict):
            raise BadInputError(f"{where}: every JSONL line must be a JSON object")
        first_keys = first_keys or list(record)
        present.update(name for name in wanted if name in record)
        for name in wanted:
            columns[name].append(record.get(name))
        rows, bad = rows + 1, bad + replaced
    if not rows:  # e.g. a feedback log created before any label arrived
        return RawData(_empty(source, "").frame, "jsonl", 0)
    if source.text_column not in present or source.label_column not in present:
        frame = pd.DataFrame(columns=first_keys)  # _columns names what is missing
    else:
        frame = pd.DataFrame({name: columns[name] for name in wanted if name in present})
    return RawData(_columns(frame, source, where), "jsonl", rows, bad)


def _read_file(fs: object, path: str, source: DataSource, fmt: str, where: str) -> RawData:
    with fs.open(path, "rb", compression="infer") as handle:  # type: ignore[attr-defined]
        if fmt == "jsonl":
            return _read_jsonl(handle, source, where)
        data = handle.read()
    if fmt == "parquet":
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except Exception as error:  # pyarrow raises many types for a corrupt file
            raise BadInputError(f"{where} is not a readable Parquet file: {error}") from error
        return RawData(_columns(frame, source, where), fmt, len(frame))
    text, bad = decode(data, source, where)
    try:
        sep = "\t" if PurePosixPath(path).suffix.lower() == ".tsv" else ","
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as error:
        raise BadInputError(f"{where} is not valid {fmt}: {error}") from error
    except pd.errors.EmptyDataError as error:
        raise BadInputError(f"{where} is empty") from error
    return RawData(_columns(frame, source, where), fmt, len(frame), bad)


def _read_text_folder(fs: object, root: str, source: DataSource) -> RawData:
    """One sub-folder per label; every file below it is one text."""
    texts: list[str] = []
    labels: list[str] = []
    bad_total = 0
    root = root.rstrip("/")
    for file_path in sorted(fs.find(root)):  # type: ignore[attr-defined]
        relative = PurePosixPath(file_path[len(root) :].lstrip("/"))
        if len(relative.parts) < 2 or any(p.startswith(".") for p in relative.parts):
            continue  # files at the top level have no label; hidden files are not data
        with fs.open(file_path, "rb") as handle:  # type: ignore[attr-defined]
            text, bad = decode(handle.read(), source, f"{source.uri}/{relative}")
        bad_total += bad
        texts.append(text)
        labels.append(relative.parts[0])
    if not texts:
        raise BadInputError(
            f"text folder {source.uri} has no files in label sub-folders "
            "(expected <folder>/<label>/<file>)"
        )
    frame = pd.DataFrame({"text": texts, "label": labels})
    return RawData(frame, "textFolder", len(frame), bad_total)
