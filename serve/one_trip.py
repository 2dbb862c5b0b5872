"""One trip's features in plain Python: /predict's fast path.

:func:`stages.features.feature_matrix` is the one definition of the features, written for columns:
for a single row its NumPy set-up (an array per input column, clip, mod, floor-divide) costs ~30 µs,
more than validating the body and running the compiled trees together. :func:`feature_row` is the
same arithmetic on Python scalars (integer microseconds, the same zone tables), so a trip gets the
same float64 features bit for bit; tests/test_serve_fast_path.py checks it against the general path
on real trips, and the general path still serves batches.
"""

from __future__ import annotations

import math
from functools import lru_cache

from serve.schemas import _EPOCH, Trip, TripZones
from serve.zones import zones
from stages.features import _US_PER_DAY, ZONE_ID_RANGE, _zone_tables

_HIGHEST_ID = ZONE_ID_RANGE[1] + 1


@lru_cache(maxsize=1)
def _tables() -> tuple[list[float], list[float]]:
    # The pipeline's own zone and borough codes (stages.features), as Python floats.
    zone_code, borough_code = _zone_tables()
    return zone_code.tolist(), borough_code.tolist()


def _zone_id(given: int | None, found: int) -> int:
    # feature_matrix clips the ID to the tables' range before looking it up (an ID beyond is "other").
    location = int(zones().location_id[found]) if found >= 0 else given
    assert location is not None  # a validated trip gives a zone ID or coordinates at each end
    return min(max(location, 0), _HIGHEST_ID)


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)


def feature_row(trip: Trip, located: TripZones | None) -> list[float]:
    """The trip's features in :data:`stages.features.FEATURES` order, as feature_matrix computes
    them for a one-row column set from :func:`serve.schemas.trip_columns`."""
    pu = _zone_id(trip.pu_location_id, int(located.pickup[0]) if located is not None else -1)
    do = _zone_id(trip.do_location_id, int(located.dropoff[0]) if located is not None else -1)
    zone_code, borough_code = _tables()
    delta = trip.pickup_local() - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    days, day_micros = divmod(micros, _US_PER_DAY)
    return [
        zone_code[pu],
        zone_code[do],
        borough_code[pu],
        borough_code[do],
        float(pu == do),
        float(trip.trip_distance),
        day_micros / 3_600_000_000.0,
        float((days + 3) % 7),  # 1970-01-01 was a Thursday; Monday = 0 as in pandas
        _float(trip.vendor_id),
        _float(trip.ratecode_id),
        _float(trip.trip_type),
        _float(trip.passenger_count),
    ]
