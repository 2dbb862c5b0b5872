"""scripts/calibrate_synthetic.py on a few real months: the calibration file the generator reads."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from core.features import filter_mask
from core.months import month_bounds
from core.params import FilterParams
from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("calibrate_synthetic", ROOT / "scripts/calibrate_synthetic.py")
assert _spec and _spec.loader
calibrate_synthetic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(calibrate_synthetic)

MONTHS = ["2021-01", "2021-02", "2022-01"]  # two eras (2022 changed the schema), not contiguous


def _keys(tree: object, depth: int) -> object:
    """The shape of a JSON document down to ``depth`` (mappings' keys; lists and values as a mark)."""
    if isinstance(tree, dict) and depth:
        return {key: _keys(value, depth - 1) for key, value in tree.items()}
    return type(tree).__name__


@pytest.fixture(scope="module")
def calibrated(real_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("tlc")
    for name in [f"green_tripdata_{m}.parquet" for m in MONTHS] + ["taxi_zone_lookup.csv"]:
        (folder / name).symlink_to(real_dir / name)
    out = folder / "calibration.json"
    calibrate_synthetic.main(str(folder), str(out))
    return folder, json.loads(out.read_text())


@pytest.mark.realdata
def test_the_calibration_has_the_shape_the_generator_reads(calibrated: tuple[Path, dict]) -> None:
    _, calibration = calibrated
    committed = json.loads((ROOT / "core/resources/synthetic_calibration.json").read_text())
    assert calibration["source_months"] == MONTHS
    assert sorted(calibration["anchors"]) == MONTHS
    shape = {k: v for k, v in _keys(calibration, 2).items() if k not in ("anchors", "source_months")}
    assert shape == {k: v for k, v in _keys(committed, 2).items() if k not in ("anchors", "source_months")}
    assert _keys(calibration["anchors"]["2021-01"], 1) == _keys(committed["anchors"]["2021-01"], 1)


@pytest.mark.realdata
def test_it_keeps_the_trips_the_pipeline_keeps(calibrated: tuple[Path, dict]) -> None:
    folder, _ = calibrated
    trips = calibrate_synthetic.load_months(folder)
    kept = calibrate_synthetic.clean_mask(trips)
    for month in MONTHS:
        rows = trips[trips["month"] == month]
        start, end = month_bounds(month)
        assert kept[rows.index].equals(filter_mask(rows, start, end, FilterParams()))
