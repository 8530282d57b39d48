"""The holdout split of the prepare step: the newest share of a data source's rows, by
its time column, is taken out of the rows to split and kept apart as a frozen
evaluation set, the dataset's holdout file (``holdout.parquet``).

Called by :mod:`bertops.trainer.prepare` after cleaning and before the
train/validation/test split, so held-out rows are cleaned like every row and a text seen
earlier in any source is dropped as a duplicate, never held out and trained on at once.
The challenge step (:mod:`bertops.trainer.challenge`) reads the file back to compare a
retrained model with the stable one on feedback the retraining never saw.

Deterministic: a source's rows are ordered by (time, position in the source), rows
without a parsable time first, and the last ``ceil(fraction x rows)`` are held out.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from bertops.api.dataset import BertDatasetSpec, DataSource
from bertops.trainer import artifacts_io
from bertops.trainer.errors import BadInputError
from bertops.trainer.sources import SOURCE_COLUMN, additional_key

HOLDOUT_FILE = "holdout.parquet"
TIME_COLUMN = "time"  # the raw time values io keeps for a source with a holdout


@dataclass
class Holdout:
    rows: pd.DataFrame  # text, label, source, time (epoch seconds, NaN: none), held order
    sources: list[int]  # the sources that asked for a holdout (0: source, i + 1: additional)

    @property
    def per_source(self) -> dict[str, int]:
        """Rows held per asking source, keyed ``source`` / ``additionalSources[i]``."""
        numbers = self.rows[SOURCE_COLUMN]
        return {source_key(n): int((numbers == n).sum()) for n in self.sources}


def source_key(number: int) -> str:
    return "source" if number == 0 else additional_key(number - 1)


def parse_time(value: Any) -> float:
    """Epoch seconds of an ISO 8601 time (naive: UTC), a datetime or epoch seconds
    (number or numeric text); NaN when there is none or it cannot be read."""
    if value is None or isinstance(value, bool):
        return math.nan
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
        return number if math.isfinite(number) else math.nan
    if isinstance(value, str):
        text = value.strip()
        try:
            return parse_time(float(text))
        except ValueError:
            pass
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return math.nan
    if isinstance(value, datetime):
        if pd.isna(value):  # pandas' NaT is a datetime too
            return math.nan
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.timestamp()
    return math.nan


def held_count(fraction: float, rows: int) -> int:
    # Rounded first: 0.1 * 30 is 3.0000000000000004 in floating point, not a 4th row.
    return math.ceil(round(fraction * rows, 9))


def split_off(frame: pd.DataFrame, spec: BertDatasetSpec) -> tuple[pd.DataFrame, Holdout | None]:
    """The rows left to split (in input order, without the time column) and the holdout,
    or None when no source asks for one."""
    all_sources: list[DataSource] = [spec.source, *(spec.additional_sources or ())]
    asking = {n: s for n, s in enumerate(all_sources) if s.holdout_fraction is not None}
    rest = frame.drop(columns=[TIME_COLUMN], errors="ignore")
    if not asking:
        return rest, None
    raw_times = frame[TIME_COLUMN] if TIME_COLUMN in frame.columns else [None] * len(frame)
    times = np.array([parse_time(value) for value in raw_times], dtype=np.float64)
    numbers = frame[SOURCE_COLUMN].to_numpy()
    held: list[int] = []
    for number, source in asking.items():
        positions = np.flatnonzero(numbers == number)
        held.extend(_newest(positions, times[positions], source, source_key(number)))
    mask = np.zeros(len(frame), dtype=bool)
    mask[held] = True
    rows = rest.iloc[held].assign(**{TIME_COLUMN: times[held]}).reset_index(drop=True)
    return rest[~mask].reset_index(drop=True), Holdout(rows, list(asking))


def _newest(positions: np.ndarray, times: np.ndarray, source: DataSource, key: str) -> list[int]:
    """The positions of the newest rows of one source, oldest of them first."""
    if len(positions) == 0:
        return []  # an optional source not there (yet): no holdout, no error
    if np.isnan(times).all():
        raise BadInputError(
            f"{key} {source.uri}: no row has a parsable time in column "
            f"{source.time_column!r} to hold out the newest rows by; set timeColumn "
            "(ISO 8601 times or epoch seconds)"
        )
    assert source.holdout_fraction is not None
    count = held_count(source.holdout_fraction, len(positions))
    # Rows without a time sort as oldest; equal times keep the source's order (the
    # later row is the newer one), so the choice is the same on every run.
    order = np.lexsort((positions, np.where(np.isnan(times), -np.inf, times)))
    return [int(p) for p in positions[order[len(positions) - count :]]]


def keep_labels(holdout: Holdout, names: list[str]) -> tuple[Holdout, int]:
    """Only rows whose label the dataset has (its label list is decided on the rest);
    the holdout and the number of rows dropped for an unknown label."""
    known = holdout.rows["label"].isin(names).to_numpy()
    rows = holdout.rows[known].reset_index(drop=True)
    return Holdout(rows, holdout.sources), int((~known).sum())


def annotate(table: pd.DataFrame, holdout: Holdout) -> pd.DataFrame:
    """A tokenized holdout table with where each row came from and when (ISO 8601 UTC,
    None without a time), the columns a reader needs to see what was held out."""
    times = [
        None if math.isnan(t) else datetime.fromtimestamp(t, UTC).isoformat()
        for t in holdout.rows[TIME_COLUMN]
    ]
    return table.assign(
        time=times, source=[source_key(int(n)) for n in holdout.rows[SOURCE_COLUMN]]
    )


def stats(holdout: Holdout, names: list[str]) -> dict[str, Any]:
    """The holdout's entry of the dataset's stats.json."""
    times = holdout.rows[TIME_COLUMN].dropna()
    return {
        "file": HOLDOUT_FILE,
        "rows": len(holdout.rows),
        "rowsPerSource": holdout.per_source,
        "labelCounts": {label: int((holdout.rows["label"] == label).sum()) for label in names},
        "oldest": datetime.fromtimestamp(times.min(), UTC).isoformat() if len(times) else None,
        "newest": datetime.fromtimestamp(times.max(), UTC).isoformat() if len(times) else None,
    }


def read(uri: str) -> pd.DataFrame:
    """A holdout file (any fsspec URI) as written by prepare; BadInputError when it is
    missing or not one."""
    if not artifacts_io.exists(uri):
        raise BadInputError(f"holdout file {uri} does not exist")
    try:
        frame = pd.read_parquet(io.BytesIO(artifacts_io.read_bytes(uri)))
    except Exception as error:  # pyarrow raises many types for a corrupt file
        raise BadInputError(f"holdout file {uri} is not readable Parquet: {error}") from error
    missing = {"text", "label_name"} - set(frame.columns)
    if missing:
        raise BadInputError(f"holdout file {uri} lacks column(s) {', '.join(sorted(missing))}")
    return frame
