"""One trip's features for /predict's fast path: the request's shape to :func:`core.features.feature_row`.

The arithmetic is the pipeline's own (core/features.py holds both the column form the pipeline
and batches use and the one-row form); this module only resolves what a request gives (zone IDs or
coordinates already located, a local pickup time) into that function's scalar inputs.
"""

from __future__ import annotations

from core.features import feature_row as _feature_row
from serve.request_models import Trip
from serve.trip_columns import pickup_micros
from serve.zones import TripZones, zones


def _zone_id(given: int | None, found: int) -> int:
    location = int(zones().location_id[found]) if found >= 0 else given
    assert location is not None  # a validated trip gives a zone ID or coordinates at each end
    return location


def feature_row(trip: Trip, located: TripZones | None) -> list[float]:
    """The trip's features in :data:`core.features.FEATURES` order, as feature_matrix computes
    them for a one-row column set from :func:`serve.trip_columns.trip_columns`."""
    pu = _zone_id(trip.pu_location_id, int(located.pickup[0]) if located is not None else -1)
    do = _zone_id(trip.do_location_id, int(located.dropoff[0]) if located is not None else -1)
    optional = (trip.vendor_id, trip.ratecode_id, trip.trip_type, trip.passenger_count)
    return _feature_row(pu, do, pickup_micros(trip), trip.trip_distance, optional)
