"""Derive core/resources/zones.json from the real TLC months in ../shared/data/tlc.

The committed table holds statistics only (trip counts per zone, and each zone's borough and
service zone from TLC's lookup), never the trip files themselves, so a user's clone works without
../shared. Rerun this when new real months are added there.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.io import write_json


def main(tlc_dir: str = "../shared/data/tlc", out: str = "core/resources/zones.json") -> None:
    folder = Path(tlc_dir)
    pickups: dict[int, int] = {}
    dropoffs: dict[int, int] = {}
    files = sorted(folder.glob("green_tripdata_*.parquet"))
    for path in files:
        table = pq.read_table(path, columns=["PULocationID", "DOLocationID"])
        for column, counts in (("PULocationID", pickups), ("DOLocationID", dropoffs)):
            vc = pc.value_counts(table.column(column))
            for item in vc.to_pylist():
                zone = int(item["values"])
                counts[zone] = counts.get(zone, 0) + int(item["counts"])
    zones = {}
    with open(folder / "taxi_zone_lookup.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            zone = int(row["LocationID"])
            zones[str(zone)] = {
                "borough": row["Borough"],
                "service_zone": row["service_zone"],
                "pickups": pickups.get(zone, 0),
                "dropoffs": dropoffs.get(zone, 0),
            }
    write_json({"source_months": [p.stem.split("_")[-1] for p in files], "zones": zones}, out)
    print(f"wrote {out}: {len(zones)} zones from {len(files)} months")


if __name__ == "__main__":
    main(*sys.argv[1:])
