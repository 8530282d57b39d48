"""Reading every data source of a BertDataset: ``spec.source`` first, then each of
``spec.additionalSources`` in order, each with its own format, columns and encoding, and
appending them into one raw ``text``/``label`` frame.

Called by :mod:`bertops.trainer.prepare` before cleaning, de-duplication and the split, so
a row repeated across sources is dropped once like any duplicate. A missing or unreadable
additional source fails the step as bad input (exit code 2) with a message that names it
(``additionalSources[i] <uri>``), because a retraining that silently lost its feedback rows
would look like a success.

Each row keeps the number of the source it came from (column ``source``: 0 for
``spec.source``, i + 1 for ``additionalSources[i]``), so the holdout split
(:mod:`bertops.trainer.holdout`) can take the newest rows of one source after cleaning.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bertops.api.dataset import BertDatasetSpec
from bertops.trainer import io
from bertops.trainer.errors import BadInputError
from bertops.trainer.progress import Progress

SOURCE_COLUMN = "source"


@dataclass
class Sources:
    main: io.RawData
    additional: list[io.RawData]
    frame: pd.DataFrame  # main rows, then each additional source's rows, in order; + source

    @property
    def invalid_byte_sequences(self) -> int:
        return self.main.invalid_byte_sequences + sum(
            raw.invalid_byte_sequences for raw in self.additional
        )

    def rows_read(self) -> dict[str, int]:
        """Rows read per source, keyed ``source`` and ``additionalSources[i]``."""
        counts = {"source": self.main.rows_read}
        for index, raw in enumerate(self.additional):
            counts[additional_key(index)] = raw.rows_read
        return counts


def additional_key(index: int) -> str:
    return f"additionalSources[{index}]"


def read_sources(spec: BertDatasetSpec, progress: Progress) -> Sources:
    progress.message(f"reading {spec.source.uri}")
    main = io.read_source(spec.source)
    additional: list[io.RawData] = []
    for index, source in enumerate(spec.additional_sources or ()):
        where = f"{additional_key(index)} {source.uri}"
        progress.message(f"reading {where}")
        try:
            additional.append(io.read_source(source))
        except BadInputError as error:
            # io's messages name the URI; say which entry of the list it was too.
            raise BadInputError(f"{additional_key(index)}: {error}") from error
        except (PermissionError, FileNotFoundError, IsADirectoryError) as error:
            # Unreadable is the spec's problem (exit 2); other OSErrors (a dropped
            # connection to a remote store) stay transient and are retried.
            raise BadInputError(f"{where} cannot be read: {error}") from error
    frames = [
        raw.frame.assign(**{SOURCE_COLUMN: number})
        for number, raw in enumerate([main, *additional])
    ]
    frame = pd.concat(frames, ignore_index=True)
    return Sources(main, additional, frame)
