"""Feature engineering: the single module that both training and serving import.

Keeping one implementation is what makes training/serving skew impossible: the service calls
:func:`feature_matrix` on request data exactly as the pipeline calls it on a month of trips.
It works on plain NumPy columns so that one request costs microseconds, not a DataFrame build.

Only what a dispatcher knows at pickup is used. ``trip_distance`` is the one exception the
product allows: at serving time it is the route planner's distance estimate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

TARGET = "duration_min"
# Not a model feature: when the trip started, kept so a month can be split in time (the retrain
# trigger fits on the month's first weeks and scores on its last, as the next month would).
PICKUP_TIME = "pickup_time"

# Raw (canonical-schema) columns the features are computed from. The first four are required;
# the others are optional at serving time and mean "unknown" when absent.
INPUT_COLUMNS = (
    "lpep_pickup_datetime",
    "PULocationID",
    "DOLocationID",
    "trip_distance",
    "VendorID",
    "RatecodeID",
    "trip_type",
    "passenger_count",
)
REQUIRED_INPUTS = INPUT_COLUMNS[:4]

FEATURES = (
    "pu_zone",
    "do_zone",
    "pu_borough",
    "do_borough",
    "same_zone",
    "trip_distance",
    "pickup_hour",
    "pickup_dow",
    "vendor_id",
    "rate_code",
    "trip_type",
    "passenger_count",
)
# Categorical features are small integer codes (HistGradientBoosting's native categorical
# support needs codes below 255; there are 265 taxi zones, hence the "other" bucket).
CATEGORICAL_FEATURES = ("pu_zone", "do_zone", "pu_borough", "do_borough")
MAX_ZONE_CODES = 254
ZONE_ID_RANGE = (1, 265)

_SECONDS_PER_HOUR = 3600.0
_US_PER_DAY = 86_400_000_000


@lru_cache(maxsize=1)
def _zones() -> dict[str, Any]:
    return json.loads(resources.files("core.resources").joinpath("zones.json").read_text())["zones"]


@lru_cache(maxsize=1)
def borough_names() -> tuple[str, ...]:
    """The borough each ``pu_borough`` / ``do_borough`` code stands for: code i is name i."""
    return tuple(sorted({v["borough"] for v in _zones().values()}))


@lru_cache(maxsize=1)
def _zone_tables() -> tuple[np.ndarray, np.ndarray]:
    """Lookup arrays indexed by zone id: zone code and borough code.

    The codes come from the committed zones.json (trip counts over real months), not from the
    training data, so the encoding is identical for every model and needs no fitted state.
    """
    raw = _zones()
    ranked = sorted(raw, key=lambda z: (-(raw[z]["pickups"] + raw[z]["dropoffs"]), int(z)))
    zone_code = np.full(ZONE_ID_RANGE[1] + 2, MAX_ZONE_CODES, dtype=np.float64)
    for code, zone in enumerate(ranked[:MAX_ZONE_CODES]):
        zone_code[int(zone)] = code
    boroughs = list(borough_names())
    borough_code = np.full(ZONE_ID_RANGE[1] + 2, boroughs.index("Unknown"), dtype=np.float64)
    for zone, info in raw.items():
        borough_code[int(zone)] = boroughs.index(info["borough"])
    return zone_code, borough_code


def _as_float(values: Any, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    if isinstance(values, pd.Series):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(values, dtype=np.float64).reshape(-1) * np.ones(n)


def _as_datetime_us(values: Any) -> np.ndarray:
    if isinstance(values, pd.Series):
        values = values.to_numpy()
    return np.asarray(values, dtype="datetime64[us]").reshape(-1)


def feature_matrix(columns: Mapping[str, Any]) -> np.ndarray:
    """Compute the model's features (columns in :data:`FEATURES` order) as a float64 matrix.

    ``columns`` maps the names in :data:`INPUT_COLUMNS` to equal-length arrays (a DataFrame
    works too); optional inputs may be missing or null.
    """
    pickup = _as_datetime_us(columns["lpep_pickup_datetime"])
    n = pickup.shape[0]
    pu = np.clip(_as_float(columns["PULocationID"], n), 0, ZONE_ID_RANGE[1] + 1).astype(np.int64)
    do = np.clip(_as_float(columns["DOLocationID"], n), 0, ZONE_ID_RANGE[1] + 1).astype(np.int64)
    zone_code, borough_code = _zone_tables()
    micros = pickup.astype(np.int64)
    day_micros = np.mod(micros, _US_PER_DAY)
    days = np.floor_divide(micros, _US_PER_DAY)

    def optional(name: str) -> np.ndarray:
        return _as_float(columns.get(name, None), n)

    out = np.empty((n, len(FEATURES)), dtype=np.float64)
    out[:, 0] = zone_code[pu]
    out[:, 1] = zone_code[do]
    out[:, 2] = borough_code[pu]
    out[:, 3] = borough_code[do]
    out[:, 4] = pu == do
    out[:, 5] = _as_float(columns["trip_distance"], n)
    out[:, 6] = day_micros / (_SECONDS_PER_HOUR * 1e6)
    out[:, 7] = np.mod(days + 3, 7)  # 1970-01-01 was a Thursday; Monday = 0 as in pandas
    out[:, 8] = optional("VendorID")
    out[:, 9] = optional("RatecodeID")
    out[:, 10] = optional("trip_type")
    out[:, 11] = optional("passenger_count")
    return out


def feature_row(
    pu_location_id: int,
    do_location_id: int,
    pickup_micros: int,
    trip_distance: float,
    optional: tuple[float | None, float | None, float | None, float | None],
) -> list[float]:
    """:func:`feature_matrix` for one trip, on Python scalars: the service's single-trip path.

    For one row, feature_matrix's NumPy set-up (an array per column, clip, mod, floor-divide) costs
    ~30 µs, more than validating the request and running the compiled trees together. Both forms
    live here, side by side, so the features keep one home; tests/test_serve_fast_path.py checks
    they agree bit for bit on real trips. ``pickup_micros`` is the naive local pickup time in
    microseconds since 1970-01-01 (what feature_matrix reads from datetime64[us]); ``optional`` is
    (VendorID, RatecodeID, trip_type, passenger_count), None for missing.
    """
    highest = ZONE_ID_RANGE[1] + 1
    pu = min(max(pu_location_id, 0), highest)
    do = min(max(do_location_id, 0), highest)
    zone_code, borough_code = _zone_tables_as_lists()
    days, day_micros = divmod(pickup_micros, _US_PER_DAY)
    return [
        zone_code[pu],
        zone_code[do],
        borough_code[pu],
        borough_code[do],
        float(pu == do),
        float(trip_distance),
        day_micros / (_SECONDS_PER_HOUR * 1e6),
        float((days + 3) % 7),  # 1970-01-01 was a Thursday; Monday = 0 as in pandas
        *(math.nan if value is None else float(value) for value in optional),
    ]


@lru_cache(maxsize=1)
def _zone_tables_as_lists() -> tuple[list[float], list[float]]:
    zone_code, borough_code = _zone_tables()
    return zone_code.tolist(), borough_code.tolist()


def feature_frame(columns: Mapping[str, Any]) -> pd.DataFrame:
    """:func:`feature_matrix` as a named DataFrame (for storage, Evidently and reports)."""
    return pd.DataFrame(feature_matrix(columns), columns=list(FEATURES))


def duration_minutes(trips: pd.DataFrame) -> pd.Series:
    delta = trips["lpep_dropoff_datetime"] - trips["lpep_pickup_datetime"]
    return delta.dt.total_seconds() / 60.0


def filter_checks(
    trips: pd.DataFrame, month_start: Any, month_end: Any, filters: Any
) -> dict[str, pd.Series]:
    """Each modelling filter by name, True where a row passes it (:func:`filter_mask` keeps rows
    that pass all). Named one by one so the data checks can say which filter dropped a month's trips.
    """
    duration = duration_minutes(trips)
    pickup = trips["lpep_pickup_datetime"]
    return {
        "pickup_in_month": (pickup >= pd.Timestamp(month_start)) & (pickup < pd.Timestamp(month_end)),
        "duration_in_range": duration.between(filters.min_duration_min, filters.max_duration_min),
        "distance_in_range": (trips["trip_distance"] > 0)
        & (trips["trip_distance"] <= filters.max_distance_mi),
        "zones_known": trips["PULocationID"].between(*ZONE_ID_RANGE)
        & trips["DOLocationID"].between(*ZONE_ID_RANGE),
    }


def filter_mask(trips: pd.DataFrame, month_start: Any, month_end: Any, filters: Any) -> pd.Series:
    """Rows kept for modelling: pickup inside the month, plausible duration and distance.

    ``filters`` is :class:`core.params.FilterParams`. TLC files hold a few stray rows from other
    years (clock errors); they are dropped here, not in ingest, so the raw month stays complete.
    """
    checks = iter(filter_checks(trips, month_start, month_end, filters).values())
    kept = next(checks)
    for passed in checks:
        kept = kept & passed
    return kept
