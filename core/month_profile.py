"""One month's profile for the data checks, accumulated one row group at a time.

Everything core/data_checks.py judges is counted here, in one streaming pass over the canonical
month: the row rules (a pandera schema), nulls, rows per vendor and per day, what each filter drops
(overall and per vendor), exact duplicates (one 8-byte hash per row) and each vendor's durations
per distance band (histograms in quarter minutes: exact medians in bounded memory).
"""

from __future__ import annotations

import calendar
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pyarrow import Table as ArrowTable

from core.features import ZONE_ID_RANGE, duration_minutes, filter_checks
from core.io import StageError, iter_row_groups
from core.months import month_bounds
from core.params import FilterParams
from core.paths import RAW_DIR, raw_path

# Distance bands (miles, upper edge inclusive) for the target's distribution: short trips are
# dominated by waiting, long ones by speed, so a shift is judged band by band.
BAND_EDGES_MI = (1.0, 2.0, 4.0, 8.0)
BANDS = ("0-1 mi", "1-2 mi", "2-4 mi", "4-8 mi", "8+ mi")
# Durations are histogrammed in quarter minutes up to 5 hours (the last bin holds the rest): the
# medians are exact to a quarter minute in bounded memory, whatever the month's size.
BIN_MIN = 0.25
N_BINS = int(300 / BIN_MIN) + 1
UNKNOWN_VENDOR = -1


def month_schema(month: str) -> pa.DataFrameSchema:
    """The row rules of one month's canonical file: what no real trip can look like."""
    start, end = (pd.Timestamp(d) for d in month_bounds(month))
    zone = pa.Check.in_range(*ZONE_ID_RANGE, name="zone_id_valid")
    return pa.DataFrameSchema(
        {
            "lpep_pickup_datetime": pa.Column(
                nullable=False,
                checks=pa.Check.in_range(start, end, include_max=False, name="pickup_in_month"),
            ),
            "lpep_dropoff_datetime": pa.Column(nullable=False),
            "PULocationID": pa.Column(nullable=False, checks=zone),
            "DOLocationID": pa.Column(nullable=False, checks=zone),
            "trip_distance": pa.Column(nullable=False, checks=pa.Check.ge(0, name="distance_not_negative")),
            "fare_amount": pa.Column(nullable=True, checks=pa.Check.ge(0, name="fare_not_negative")),
        },
        checks=[
            pa.Check(
                lambda trips: trips["lpep_dropoff_datetime"] > trips["lpep_pickup_datetime"],
                name="dropoff_after_pickup",
            )
        ],
        name=f"green taxi {month}",
    )


def rule_failures(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> Counter[tuple[str, str]]:
    """Rows failing each of the schema's rules, keyed ``(rule, column)``.

    The schema's checks are run one by one for their boolean output rather than through
    ``validate(lazy=True)``: a broken month fails every row, and pandera's failure-case tables for
    millions of rows cost far more than the counts needed here.
    """
    failures: Counter[tuple[str, str]] = Counter()
    for name, column in schema.columns.items():
        values = frame[name]
        if not column.nullable:
            failures["required_not_null", name] += int(values.isna().sum())
        for check in column.checks:
            failures[check.name, name] += int((~check(values).check_output).sum())
    for check in schema.checks:
        failures[check.name, "row"] += int((~check(frame).check_output).sum())
    return failures


@dataclass
class MonthProfile:
    """What the checks need to know about one month, accumulated one row group at a time."""

    month: str
    rows: int = 0
    nulls: Counter[str] = field(default_factory=Counter)
    rows_by_vendor: Counter[int] = field(default_factory=Counter)
    kept_by_vendor: Counter[int] = field(default_factory=Counter)
    # filter name -> vendor -> rows the filter drops (a row can fail several filters)
    dropped: dict[str, Counter[int]] = field(default_factory=dict)
    rules: Counter[tuple[str, str]] = field(default_factory=Counter)
    trips_by_day: np.ndarray | None = None
    duplicates: int = 0
    # (vendor, band) -> duration histogram (BIN_MIN-minute bins)
    durations: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    @property
    def days_in_month(self) -> int:
        year, month = (int(p) for p in self.month.split("-"))
        return calendar.monthrange(year, month)[1]

    @property
    def kept(self) -> int:
        return sum(self.kept_by_vendor.values())


def profile_month(month: str, filters: FilterParams, raw_dir: Path = RAW_DIR) -> MonthProfile:
    """Stream the ingested ``month`` once and count everything the checks compare."""
    path = raw_path(month, raw_dir)
    if not path.exists():
        raise StageError(f"{path}: missing; run the ingest stage first (dvc repro ingest)")
    profile = profile_tables(month, iter_row_groups(path), filters)
    if profile.rows == 0:
        raise StageError(f"{path}: the month is empty (0 rows)")
    return profile


def profile_tables(month: str, tables: Iterable[ArrowTable], filters: FilterParams) -> MonthProfile:
    """:func:`profile_month` of a month given as canonical-schema tables (core/schema.py)."""
    start, end = month_bounds(month)
    schema = month_schema(month)
    profile = MonthProfile(month)
    profile.trips_by_day = np.zeros(profile.days_in_month, dtype=np.int64)
    hashes = []
    for table in tables:
        frame = table.to_pandas()
        profile.rows += len(frame)
        vendor = frame["VendorID"].fillna(UNKNOWN_VENDOR).to_numpy(dtype=np.int64)
        profile.nulls.update({c: int(n) for c, n in frame.isna().sum().items()})
        profile.rows_by_vendor.update(_counts(vendor))
        passes = filter_checks(frame, start, end, filters)
        kept = np.ones(len(frame), dtype=bool)
        for name, passed in passes.items():
            passed = passed.to_numpy(dtype=bool, na_value=False)
            profile.dropped.setdefault(name, Counter()).update(_counts(vendor[~passed]))
            kept &= passed
        profile.kept_by_vendor.update(_counts(vendor[kept]))
        profile.rules.update(rule_failures(schema, frame))
        in_month = passes["pickup_in_month"].to_numpy(dtype=bool, na_value=False)
        days = frame["lpep_pickup_datetime"].dt.day.to_numpy()[in_month] - 1
        profile.trips_by_day += np.bincount(days.astype(np.int64), minlength=profile.days_in_month)
        hashes.append(pd.util.hash_pandas_object(frame, index=False).to_numpy())
        _add_durations(profile, frame, vendor, in_month, filters)
    if hashes:
        every = np.concatenate(hashes)
        profile.duplicates = len(every) - len(np.unique(every))
    return profile


def _counts(values: np.ndarray) -> dict[int, int]:
    keys, counts = np.unique(values, return_counts=True)
    return {int(k): int(c) for k, c in zip(keys, counts, strict=True)}


def _add_durations(
    profile: MonthProfile,
    frame: pd.DataFrame,
    vendor: np.ndarray,
    in_month: np.ndarray,
    filters: FilterParams,
) -> None:
    """Histogram the target (duration in minutes) per vendor and distance band.

    Every trip of the month with a plausible distance and a positive duration counts, including the
    ones the duration filter drops: a clock an hour late must show as an hour, not as missing trips.
    """
    distance = frame["trip_distance"].to_numpy(dtype=np.float64, na_value=np.nan)
    minutes = duration_minutes(frame).to_numpy(dtype=np.float64, na_value=np.nan)
    usable = in_month & (distance > 0) & (distance <= filters.max_distance_mi) & (minutes > 0)
    band = np.digitize(distance[usable], BAND_EDGES_MI, right=True)
    bins = np.minimum(minutes[usable] / BIN_MIN, N_BINS - 1).astype(np.int64)
    for v in np.unique(vendor[usable]):
        mine = vendor[usable] == v
        for b in range(len(BANDS)):
            select = mine & (band == b)
            if select.any():
                hist = np.bincount(bins[select], minlength=N_BINS)
                key = (int(v), b)
                profile.durations[key] = profile.durations.get(key, 0) + hist


def median_minutes(hist: np.ndarray) -> float:
    """The median of a BIN_MIN histogram, interpolated within its bin."""
    cum = np.cumsum(hist)
    half = cum[-1] / 2.0
    i = int(np.searchsorted(cum, half))
    before = cum[i - 1] if i else 0
    return float((i + (half - before) / hist[i]) * BIN_MIN)
