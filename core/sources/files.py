"""Sources whose months are TLC's own parquet files (downloaded or in a folder): naming and reading.

TLC names a Green Taxi month ``green_tripdata_YYYY-MM.parquet``; a file is read one row group at
a time, so memory does not grow with the month's size, and a file's content hash is what decides
the month (a re-published file is a different month to every cache).
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from core import io
from core.io import StageError, file_sha256, open_parquet
from core.months import MonthError, validate_month
from core.sources.base import DataSource

FILE_PATTERN = "green_tripdata_{month}.parquet"
_FILE_RE = re.compile(r"^green_tripdata_(\d{4}-\d{2})\.parquet$")


def validated_month(month: str) -> str:
    """``month`` checked before it becomes part of a file name or a URL (a stage error if malformed)."""
    try:
        return validate_month(month)
    except MonthError as exc:
        raise StageError(str(exc)) from exc


def months_in(folder: Path | str) -> list[str]:
    """The months a folder holds TLC files for (``green_tripdata_YYYY-MM.parquet``), oldest first."""
    return sorted(m.group(1) for p in Path(folder).iterdir() if (m := _FILE_RE.match(p.name)))


def file_chunks(path: Path) -> Iterator[pa.Table]:
    """A parquet file in pieces of at most ``core.io.BATCH_ROWS`` rows; corruption is a one-line error."""
    handle = open_parquet(path)
    if handle.metadata.num_rows == 0:
        # An empty month still goes through normalize, which names what is wrong with it.
        yield handle.schema_arrow.empty_table()
        return
    try:
        # Looked up at call time, so a test can shrink the batches.
        for batch in handle.iter_batches(batch_size=io.BATCH_ROWS):
            yield pa.Table.from_batches([batch])
    except (pa.ArrowInvalid, OSError) as exc:
        raise StageError(f"{path}: not a readable parquet file (truncated or corrupt?): {exc}") from exc


class FileSource(DataSource):
    """A source that serves each month as one TLC parquet file."""

    @abstractmethod
    def path(self, month: str) -> Path:
        """The month's file, fetched first if the source must (an error names what is missing)."""

    def chunks(self, month: str) -> tuple[Iterator[pa.Table], str]:
        path = self.path(month)
        return file_chunks(path), str(path)

    def identity(self, month: str) -> dict[str, Any]:
        return {"source": "file", "month": month, "sha256": file_sha256(self.path(month))}
