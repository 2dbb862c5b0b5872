"""Month data for the backtest: features and labels kept apart, each month featurised once.

The replay asks for a month's *features* to predict it and only afterwards for its *labels*.
Keeping the two behind separate methods of one provider object is what lets the replay enforce,
through :class:`Timeline`, (and a test prove) that no label is read before its month has been
predicted; a test swaps in a provider that corrupts or refuses labels.

:class:`SourceMonths` builds months exactly as the pipeline does (the configured source's
``materialise``, core/sources/, then ``core.feature_tables.month_frame``) and caches the featurised
month under ``.cache/backtest/months/``, keyed on the source data's content (the source's
``identity``) and the params and code that shape it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.feature_tables import month_frame
from core.features import FEATURES, PICKUP_TIME, TARGET
from core.io import StageError, write_parquet
from core.months import month_index
from core.params import Params
from core.paths import raw_path
from core.sources import source_for

log = logging.getLogger(__name__)

# Modules whose code shapes a featurised month from any source: a change to any of them must miss
# the cache (with the source's own ``code_modules``).
MONTH_CODE = (
    "core.sources.base",
    "core.sources.files",
    "core.schema",
    "core.features",
    "core.feature_tables",
)


class MissingMonthError(StageError):
    """A month the replay needs is not available from the data source."""


class MonthData(Protocol):
    """What the replay engine needs to know about months; see the module docstring."""

    def key(self, month: str) -> str:
        """A content hash of the month (features and labels): the cache key of everything derived."""
        ...

    def missing(self, months: list[str]) -> list[str]:
        """The months of ``months`` the source cannot provide (checked before any work starts)."""
        ...

    def features(self, month: str) -> pd.DataFrame:
        """The model's feature columns and the pickup time, one row per trip; never the target."""
        ...

    def labels(self, month: str) -> np.ndarray:
        """The target (minutes), aligned with :meth:`features`."""
        ...


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (dicts are key-sorted)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def code_digest(*modules: str) -> str:
    """Hash of the named modules' source, so a code change invalidates what they produced."""
    sources = []
    for name in modules:
        path = import_module(name).__file__
        sources.append(Path(path).read_bytes() if path else b"")
    return hashlib.sha256(b"\0".join(sources)).hexdigest()[:16]


def build_month(month: str, params: Params) -> pd.DataFrame:
    """One month as the featurize stage makes it: features + target + month, after the filters.

    Goes through a throw-away raw folder so ``month_frame`` (and so the filters) are reused as is.
    """

    with tempfile.TemporaryDirectory(prefix="autoops-backtest-raw-") as folder:
        source_for(params).materialise(month, raw_path(month, Path(folder)))
        return month_frame(month, params, Path(folder))


class SourceMonths:
    """Months from the configured source (core/sources/), featurised once and cached."""

    def __init__(self, params: Params, cache_dir: Path | None) -> None:
        self._params = params
        self._source = source_for(params)
        self._cache = cache_dir / "months" if cache_dir else None
        self._frames: dict[str, pd.DataFrame] = {}
        self._keys: dict[str, str] = {}
        # A source's own code (the generator) shapes only its months: editing it must not refeaturise others.
        self._code = code_digest(*MONTH_CODE, *self._source.code_modules)

    @property
    def params(self) -> Params:
        return self._params

    @property
    def where(self) -> str:
        return self._source.describe()

    def inventory(self) -> list[str] | None:
        """The months the source has (None for sources that cannot list theirs)."""
        return self._source.months()

    # -- identity ---------------------------------------------------------------------------

    def key(self, month: str) -> str:
        if month not in self._keys:
            self._keys[month] = digest(
                self._source.identity(month), self._params.filters.model_dump(), self._code
            )
        return self._keys[month]

    def missing(self, months: list[str]) -> list[str]:
        return self._source.missing(months)

    # -- data -------------------------------------------------------------------------------

    def _cache_file(self, month: str) -> Path | None:
        return self._cache / f"{month}-{self.key(month)}.parquet" if self._cache else None

    def cached(self, month: str) -> bool:
        path = self._cache_file(month)
        return month in self._frames or (path is not None and path.exists())

    def put(self, month: str, frame: pd.DataFrame) -> None:
        """Store a month built elsewhere (a worker process running :func:`build_month`)."""
        path = self._cache_file(month)
        if path is not None and not path.exists():
            write_parquet(pa.Table.from_pandas(frame, preserve_index=False), path)
        self._frames[month] = frame

    def frame(self, month: str) -> pd.DataFrame:
        if month not in self._frames:
            path = self._cache_file(month)
            if path is not None and path.exists():
                self._frames[month] = pq.read_table(path).to_pandas()
            else:
                self.put(month, build_month(month, self._params))
        return self._frames[month]

    def features(self, month: str) -> pd.DataFrame:
        # The pickup time is known when a trip is predicted; the trigger's time split needs it.
        return self.frame(month)[[*FEATURES, PICKUP_TIME]]

    def labels(self, month: str) -> np.ndarray:
        return self.frame(month)[TARGET].to_numpy(dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# The clock: no month's data before its time


class LookAheadError(RuntimeError):
    """The replay tried to read data of a month it has not reached (a bug, never user error)."""


class Timeline:
    """Hands out month data only when the replay has reached it (labels: once predicted).

    Features of the current month are needed to predict it; its labels exist only after that.
    Months before the current one (including history before the first replayed month, which
    training windows may reach back into) are the past and always readable.
    """

    def __init__(self, data: MonthData, on_predicted: Callable[[str], None] | None = None) -> None:
        self._data = data
        self._on_predicted = on_predicted
        self._now: str | None = None
        self._revealed: set[str] = set()

    @property
    def now(self) -> str:
        if self._now is None:
            raise LookAheadError("the replay has not started")
        return self._now

    def advance(self, month: str) -> None:
        if self._now is not None and month_index(month) <= month_index(self._now):
            raise LookAheadError(f"months must be replayed in order: {month} after {self._now}")
        self._now = month

    def reveal(self, month: str, *, predicted: bool = True) -> None:
        """Make ``month``'s labels readable; ``predicted=False`` only for the bootstrap month."""
        if month != self.now:
            raise LookAheadError(f"cannot reveal {month} while replaying {self.now}")
        if predicted and self._on_predicted is not None:
            self._on_predicted(month)
        self._revealed.add(month)

    def features(self, month: str) -> pd.DataFrame:
        if month_index(month) > month_index(self.now):
            raise LookAheadError(f"features of {month} requested while replaying {self.now}")
        return self._data.features(month)

    def check_labels(self, month: str) -> None:
        past = month_index(month) < month_index(self.now)
        if not (past or month in self._revealed):
            raise LookAheadError(f"labels of {month} requested before {month} was predicted (now {self.now})")

    def labels(self, month: str) -> np.ndarray:
        self.check_labels(month)
        return self._data.labels(month)

    def labelled(self, month: str) -> pd.DataFrame:
        """Features + target + month, the shape ``core.feature_tables`` gives the training window."""
        frame = self.features(month).copy()
        frame[TARGET] = self.labels(month)
        frame["month"] = month
        return frame
