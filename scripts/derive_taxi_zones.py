"""Derive serve/resources/taxi_zones.npz from TLC's taxi zone polygons (../shared/data/tlc).

The service maps coordinates (the original Auto-Ops request format) to TLC taxi zones itself, and
a user's clone has no ../shared, so the polygons are committed in a compact form: every vertex on
a 1e-7 degree grid (about 1 cm; the source's own vertices are reprojected floats with no coarser
grid), delta-encoded int32 in shapely's ragged-array layout, compressed. Zones that share a
boundary in the source share it exactly here too: both quantize the same source vertex.

    python scripts/derive_taxi_zones.py [GEOJSON (default ../shared/data/tlc/taxi_zones.geojson)] [OUT]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import shapely

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from serve.zones import GRID, load_zones  # noqa: E402


def main(
    geojson: str = "../shared/data/tlc/taxi_zones.geojson", out: str = "serve/resources/taxi_zones.npz"
) -> None:
    features = json.loads(Path(geojson).read_text())["features"]
    features.sort(key=lambda f: int(f["properties"]["LocationID"]))
    geoms = []
    for feature in features:
        geom = shapely.geometry.shape(feature["geometry"])
        if not geom.is_valid:
            raise ValueError(f"zone {feature['properties']['LocationID']}: invalid polygon in {geojson}")
        geoms.append(shapely.MultiPolygon([geom]) if geom.geom_type == "Polygon" else geom)
    kind, coords, offsets = shapely.to_ragged_array(geoms)
    assert kind == shapely.GeometryType.MULTIPOLYGON
    grid = np.round(coords / GRID).astype(np.int64)
    if np.abs(grid).max() >= 2**31:
        raise ValueError("coordinates beyond int32 at this grid: not lon/lat degrees?")
    deltas = np.diff(grid, axis=0, prepend=np.zeros((1, 2), np.int64)).astype(np.int32)
    arrays = {
        "location_id": np.array([int(f["properties"]["LocationID"]) for f in features], np.int16),
        "zone": np.array([str(f["properties"]["zone"]) for f in features]),
        "borough": np.array([str(f["properties"]["borough"]) for f in features]),
        "coord_deltas": deltas,
        **{f"offsets_{i}": np.asarray(o, np.int32) for i, o in enumerate(offsets)},
    }
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        zones = load_zones(Path(tmp))
        # The committed polygons are the source's to within half a grid step.
        back = shapely.get_coordinates(zones.geometries)
        assert np.abs(back - coords).max() <= GRID, "round trip lost precision"
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"wrote {target}: {len(features)} zones, {len(coords)} vertices, {target.stat().st_size:,} bytes")


if __name__ == "__main__":
    main(*sys.argv[1:])
