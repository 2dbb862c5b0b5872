"""Coordinates -> TLC taxi zones, for requests in the original Auto-Ops format (lon/lat).

TLC trip data has carried zone IDs instead of coordinates since 2016, and the model learned
zones; a request with coordinates is mapped to the zone whose polygon contains the point. The
polygons are TLC's own (serve/resources/taxi_zones.npz, derived by scripts/derive_taxi_zones.py
from taxi_zones.geojson). A point in no zone (water, outside the city) is refused, never guessed.
A point exactly on a boundary two zones share belongs to the lower LocationID.

Lookups use shapely's STRtree on prepared polygons: a bounding-box search, then an exact
point-in-polygon test against the few candidates. :func:`locate_points` locates a request's trips
(whichever path decoded them: serve/trip_columns.py, serve/batch_columns.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely

ZONES_FILE = Path(__file__).resolve().parent / "resources" / "taxi_zones.npz"
# Degrees per stored coordinate unit (see scripts/derive_taxi_zones.py).
GRID = 1e-7


@dataclass(frozen=True)
class Zones:
    location_id: np.ndarray
    zone: np.ndarray
    borough: np.ndarray
    geometries: np.ndarray
    tree: shapely.STRtree

    def locate(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Index into the zone arrays for each point; -1 where no zone contains it."""
        points = shapely.points(np.asarray(lon, np.float64), np.asarray(lat, np.float64))
        hits = self.tree.query(np.atleast_1d(points), predicate="intersects")
        found = np.full(np.size(points), -1, dtype=np.intp)
        # Zones are stored by LocationID, so on a shared boundary the lowest index wins: assign
        # the hits highest index first, so that the lowest is written last.
        order = np.argsort(-hits[1], kind="stable")
        found[hits[0][order]] = hits[1][order]
        return found

    def describe(self, index: int) -> dict[str, object]:
        return {
            "location_id": int(self.location_id[index]),
            "zone": str(self.zone[index]),
            "borough": str(self.borough[index]),
        }


def load_zones(path: Path = ZONES_FILE) -> Zones:
    with np.load(path) as data:
        grid = np.cumsum(data["coord_deltas"].astype(np.int64), axis=0)
        offsets = [data[f"offsets_{i}"].astype(np.int64) for i in range(3)]
        geometries = shapely.from_ragged_array(shapely.GeometryType.MULTIPOLYGON, grid * GRID, tuple(offsets))
        shapely.prepare(geometries)
        return Zones(
            location_id=data["location_id"].astype(np.int64),
            zone=data["zone"],
            borough=data["borough"],
            geometries=geometries,
            tree=shapely.STRtree(geometries),
        )


@functools.cache
def zones() -> Zones:
    """The committed zones, loaded on first use (a service that only gets zone IDs never does)."""
    return load_zones()


class OutsideZones(ValueError):
    """Coordinates that lie in no taxi zone: (trip index, "pickup" | "dropoff", lon, lat) each."""

    def __init__(self, points: list[tuple[int, str, float, float]]) -> None:
        self.points = points
        super().__init__(
            "; ".join(f"trip {i}: {end} ({lon}, {lat}) is in no NYC taxi zone" for i, end, lon, lat in points)
        )


@dataclass(frozen=True)
class TripZones:
    """The zones that coordinate trips fell in (index into :func:`zones`; -1: the trip gave a zone
    ID there)."""

    pickup: np.ndarray
    dropoff: np.ndarray

    def describe(self, i: int) -> dict[str, Any] | None:
        if self.pickup[i] < 0 and self.dropoff[i] < 0:
            return None
        table = zones()
        return {
            end: table.describe(int(index)) if index >= 0 else None
            for end, index in (("pickup_zone", self.pickup[i]), ("dropoff_zone", self.dropoff[i]))
        }


def locate_points(points: dict[str, tuple[np.ndarray, np.ndarray]]) -> TripZones:
    """Each trip's zone at each end ("pickup", "dropoff": longitudes and latitudes, NaN where the
    trip gave a zone ID instead); raises OutsideZones naming every point in no zone."""
    ends: dict[str, np.ndarray] = {}
    outside: list[tuple[int, str, float, float]] = []
    for end, (lon, lat) in points.items():
        index = np.flatnonzero(~np.isnan(lon))
        found = np.full(len(lon), -1, dtype=np.intp)
        if len(index):
            located = zones().locate(lon[index], lat[index])
            found[index] = located
            outside += [
                (int(index[k]), end, lon[index[k]], lat[index[k]]) for k in np.flatnonzero(located < 0)
            ]
        ends[end] = found
    if outside:
        raise OutsideZones(sorted(outside))
    return TripZones(ends["pickup"], ends["dropoff"])
