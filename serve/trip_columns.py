"""Validated trips -> the raw input columns :func:`core.features.feature_matrix` takes, so the
service computes features exactly as training did.

Two decoders end here: the per-trip one (pydantic's :class:`serve.request_models.Trip` objects,
:func:`trip_columns`) and the columnar one for batches (serve/batch_columns.py), which both make
a :class:`TripBatch`; /predict's one-trip fast path (serve/one_trip.py) takes
:func:`pickup_micros` from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any

import numpy as np

from core.features import INPUT_COLUMNS
from serve.request_models import Trip
from serve.zones import TripZones, locate_points, zones

# core.features.INPUT_COLUMNS (TLC's names) <- the API's field names.
INPUT_FIELDS: dict[str, str] = {
    "PULocationID": "pu_location_id",
    "DOLocationID": "do_location_id",
    "trip_distance": "trip_distance",
    "VendorID": "vendor_id",
    "RatecodeID": "ratecode_id",
    "trip_type": "trip_type",
    "passenger_count": "passenger_count",
}
assert set(INPUT_FIELDS) | {"lpep_pickup_datetime"} == set(INPUT_COLUMNS)

_input_values = attrgetter(*INPUT_FIELDS.values())
_EPOCH = datetime(1970, 1, 1)


def pickup_micros(trip: Trip) -> int:
    """The trip's local pickup time as integer microseconds since 1970 (datetime64[us]'s unit)."""
    delta = trip.pickup_local() - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


Points = dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TripBatch:
    """A batch's trips as columns: what both decoders of /predict_batch produce (the per-trip one,
    :meth:`from_trips`, and the columnar one, serve/batch_columns.py), and all the rest reads."""

    # One row per trip, INPUT_FIELDS' order; NaN: not given (a zone given as a point, an unknown).
    values: np.ndarray
    # The local pickup times, :func:`pickup_micros`.
    micros: np.ndarray
    # Per end ("pickup", "dropoff"): longitudes and latitudes, NaN where the trip gave a zone ID;
    # None when no trip gave coordinates.
    points: Points | None

    def __len__(self) -> int:
        return len(self.micros)

    @classmethod
    def from_trips(cls, trips: Sequence[Trip]) -> TripBatch:
        # One array for the numbers and integer microseconds for the timestamps: numpy's conversion
        # of datetime objects costs more than the rest of a 1000-trip batch together.
        values = np.array([_input_values(t) for t in trips], dtype=np.float64).reshape(
            len(trips), len(INPUT_FIELDS)
        )
        micros = np.array([pickup_micros(t) for t in trips], dtype=np.int64)
        return cls(values, micros, _points(trips))

    def locate(self) -> TripZones | None:
        """The zones of the trips given by coordinates (None: no trip was); raises
        :class:`serve.zones.OutsideZones`."""
        return locate_points(self.points) if self.points is not None else None

    def columns(self, located: TripZones | None) -> dict[str, Any]:
        """Raw input columns for :func:`core.features.feature_matrix` (NaN: unknown), the zones of
        trips given by coordinates from ``located`` (:meth:`locate`)."""
        values = self.values
        if located is not None:
            values = values.copy()
            table = zones()
            for column, found in ((0, located.pickup), (1, located.dropoff)):
                given = found >= 0
                values[given, column] = table.location_id[found[given]]
        columns: dict[str, Any] = dict(zip(INPUT_FIELDS, values.T, strict=True))
        columns["lpep_pickup_datetime"] = self.micros.view("datetime64[us]")
        return columns


def _points(trips: Sequence[Trip]) -> Points | None:
    if not any(t.has_coordinates for t in trips):
        return None

    def column(name: str) -> np.ndarray:
        return np.array([np.nan if (v := getattr(t, name)) is None else v for t in trips], np.float64)

    return {end: (column(f"{end}_longitude"), column(f"{end}_latitude")) for end in ("pickup", "dropoff")}


def locate_trips(trips: Sequence[Trip]) -> TripZones | None:
    """Map the trips given by coordinates to taxi zones (None: no trip was); raises
    :class:`serve.zones.OutsideZones`."""
    points = _points(trips)
    return locate_points(points) if points is not None else None


def trip_columns(trips: Sequence[Trip], located: TripZones | None = None) -> dict[str, Any]:
    """Raw input columns for :func:`core.features.feature_matrix` (None becomes NaN: unknown).

    Trips given by coordinates need their zones: ``located`` (from :func:`locate_trips`), else
    they are located here."""
    batch = TripBatch.from_trips(trips)
    return batch.columns(located or batch.locate())
