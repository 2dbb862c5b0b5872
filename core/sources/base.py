"""What every data source offers the pipeline, the loop and the backtest: the one interface.

A source turns a month name into that month's trips *as published* (any TLC schema era); the
canonical schema is applied here, once, for every source (:meth:`DataSource.materialise`), so
no caller knows where months come from. Each question a caller used to answer by branching on
``data.source`` is a method: a source answers it for itself, and the defaults below are what a
source that cannot answer cheaply says.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from core.io import StageError, parquet_writer
from core.months import month_index
from core.params import Params
from core.schema import CANONICAL_SCHEMA, normalize


class UnpublishedError(StageError):
    """The source has no such month (yet): the loop's "not published" answer, not an outage."""


class DataSource(ABC):
    """Months of Green Taxi trips from one place; built by :func:`core.sources.source_for`.

    ``root`` is the folder relative paths in params are resolved against for sources that read
    local files (the current directory when a stage runs; the repository when the loop asks).
    """

    #: The ``data.source`` value that selects this source (its registry key).
    name: ClassVar[str]
    #: Modules whose code shapes this source's months beyond the canonical schema: the backtest's
    #: month cache is keyed on them, so editing one refeaturises only this source's months.
    code_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Params, root: Path = Path(".")) -> None:
        self.params = params
        self.root = root

    # -- the month's data -------------------------------------------------------------------

    @abstractmethod
    def chunks(self, month: str) -> tuple[Iterator[pa.Table], str]:
        """The raw month in pieces of bounded size (so memory does not grow with a month's size)
        and a label naming where it came from (error messages name it)."""

    def load(self, month: str) -> tuple[pa.Table, str]:
        """The raw month as published, in one table, and its label."""
        chunks, label = self.chunks(month)
        return pa.concat_tables(list(chunks)), label

    def materialise(self, month: str, dest: Path) -> int:
        """Stream ``month`` into ``dest`` in the canonical schema; returns its row count."""
        chunks, label = self.chunks(month)
        rows = 0
        with parquet_writer(dest, CANONICAL_SCHEMA) as writer:
            for chunk in chunks:
                if chunk.num_rows == 0 and rows:
                    continue
                table = normalize(chunk, source=label)
                writer.write_table(table)
                rows += table.num_rows
        return rows

    @abstractmethod
    def identity(self, month: str) -> dict[str, Any]:
        """What decides the month's content (JSON-able): the backtest's cache key for it."""

    # -- which months exist -----------------------------------------------------------------

    @abstractmethod
    def latest(self, this_month: str) -> str:
        """The newest month the source can deliver now (``this_month`` is the calendar's);
        :class:`UnpublishedError` says why there is none."""

    def check_published(self, month: str, this_month: str) -> None:
        """Refuse (UnpublishedError) a month the source has not published (the caller checks the calendar)."""
        newest = self.latest(this_month)
        if month_index(month) > month_index(newest):
            raise UnpublishedError(f"{month} is not published yet: the newest {self.name} month is {newest}")

    def months(self) -> list[str] | None:
        """The months the source holds, oldest first; None when it cannot list them cheaply."""
        return None

    def missing(self, months: list[str]) -> list[str]:
        """The months of ``months`` known to be unavailable, before any work starts. A source that
        cannot list its months reports none: it fails on the first one with its own clear message."""
        have = self.months()
        return [] if have is None else [m for m in months if m not in have]

    # -- how it is named in logs and reports ------------------------------------------------

    def describe(self) -> str:
        """Where months come from, as a user would configure it (messages name it)."""
        return f"data.source: {self.name}"

    def settings(self) -> dict[str, Any]:
        """The source's own knobs that shape the backtest's figures (recorded beside them)."""
        return {}

    @property
    def shift_month(self) -> str | None:
        """The month the data is known to change regime from (a planted shift), for reports to mark."""
        return None
