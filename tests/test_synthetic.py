"""The synthetic data source: reproducible, era-exact, realistically dirty, and shifting on cue."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.features import CATEGORICAL_FEATURES, FEATURES, duration_minutes, feature_frame, filter_mask
from core.io import write_parquet
from core.months import month_bounds
from core.params import FilterParams, SyntheticParams
from core.schema import CANONICAL_SCHEMA, normalize
from core.sources.synthetic import CALIBRATION_FILE, _calibration, _season, _zone_drift, generate_month

PARAMS = SyntheticParams()  # the defaults params.yaml ships: 60k rows, shift from 2024-05


def _era(**types: pa.DataType) -> pa.Schema:
    """The canonical schema as TLC wrote an era before 2025: no ``cbd_congestion_fee``, these types."""
    fields = [f for f in CANONICAL_SCHEMA if f.name != "cbd_congestion_fee"]
    assert set(types) <= {f.name for f in fields}
    return pa.schema([pa.field(f.name, types.get(f.name, f.type)) for f in fields])


# How each era differs from the canonical schema, written out by hand from the real files (not
# taken from core/schema.py's era table), so a regression in either the generator or that table
# is caught. Old era: int64 ids, float-coded counts, ehail_fee typed null.
OLD_ERA = _era(
    **dict.fromkeys(("VendorID", "PULocationID", "DOLocationID"), pa.int64()),
    **dict.fromkeys(("RatecodeID", "passenger_count", "payment_type", "trip_type"), pa.float64()),
    ehail_fee=pa.null(),
)
NEW_ERA = _era(store_and_fwd_flag=pa.large_string())
CBD_ERA = NEW_ERA.append(pa.field("cbd_congestion_fee", pa.float64()))


def _trips(month: str, params: SyntheticParams = PARAMS) -> pd.DataFrame:
    return normalize(generate_month(month, params), month).to_pandas()


def _clean(trips: pd.DataFrame, month: str) -> pd.DataFrame:
    start, end = month_bounds(month)
    return trips[filter_mask(trips, start, end, FilterParams())]


# ---------------------------------------------------------------------------------------------
# Reproducibility and shape.


def test_same_inputs_give_identical_parquet_bytes(tmp_path: Path) -> None:
    write_parquet(generate_month("2024-01", PARAMS), tmp_path / "a.parquet")
    write_parquet(generate_month("2024-01", PARAMS), tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_months_and_seeds_give_different_data() -> None:
    small = SyntheticParams(rows_per_month=2000)
    january = generate_month("2024-01", small)
    assert not january.equals(generate_month("2024-02", small))
    assert not january.equals(generate_month("2023-01", small))
    assert not january.equals(generate_month("2024-01", small.model_copy(update={"seed": 43})))


def test_row_counts_vary_a_little_around_rows_per_month() -> None:
    counts = [generate_month(f"2024-{m:02d}", PARAMS).num_rows for m in range(1, 13)]
    # The real season (+-7% trips per day) on top of the month's length, damped.
    assert all(abs(n / PARAMS.rows_per_month - 1) < 0.12 for n in counts), counts
    assert len(set(counts)) == 12
    assert min(counts[3], counts[4]) > max(counts[6], counts[7])  # busy spring, quiet summer, as in TLC


@pytest.mark.parametrize(
    ("month", "expected"),
    [
        ("2019-07", OLD_ERA),
        ("2021-01", OLD_ERA),
        ("2023-01", OLD_ERA),  # the last float-coded month
        ("2023-02", NEW_ERA),
        ("2024-12", NEW_ERA),
        ("2025-01", CBD_ERA),  # the congestion-pricing fee starts
        ("2026-03", CBD_ERA),
    ],
)
def test_schema_is_the_raw_tlc_schema_of_the_era(month: str, expected: pa.Schema) -> None:
    assert generate_month(month, SyntheticParams(rows_per_month=500)).schema.equals(expected)


@pytest.mark.realdata
def test_schema_equals_the_real_files(real_dir: Path) -> None:
    files = sorted(real_dir.glob("green_tripdata_*.parquet"))
    assert files
    for path in files:
        month = path.stem.split("_")[-1]
        real = pq.read_schema(path).remove_metadata()
        assert generate_month(month, SyntheticParams(rows_per_month=500)).schema.equals(real), month


@pytest.mark.parametrize("month", ["2020-06", "2023-01", "2023-02", "2024-03", "2025-01"])
def test_every_era_normalises_to_the_canonical_schema(month: str) -> None:
    raw = generate_month(month, SyntheticParams(rows_per_month=3000))
    table = normalize(raw, month)
    assert table.schema.equals(CANONICAL_SCHEMA)
    assert table.num_rows == raw.num_rows
    # The "missing block": these columns are null together, never NaN-as-a-number.
    block = ["passenger_count", "RatecodeID", "payment_type", "trip_type", "store_and_fwd_flag"]
    nulls = {name: table.column(name).null_count for name in [*block, "congestion_surcharge"]}
    assert len(set(nulls.values())) == 1 and nulls["passenger_count"] > 0, nulls
    assert table.column("ehail_fee").null_count == table.num_rows


def test_pickups_lie_inside_the_month_and_junk_is_realistic() -> None:
    month = "2024-02"
    trips = _trips(month)
    start, end = (pd.Timestamp(d) for d in month_bounds(month))
    assert trips["lpep_pickup_datetime"].between(start, end, inclusive="left").all()
    minutes = duration_minutes(trips)
    distance = trips["trip_distance"]
    # Every kind of garbage real months hold, each a small share, for the filters to remove.
    assert 0.02 < (distance == 0).mean() < 0.08
    assert 0.003 < ((minutes < 1) & (distance > 0)).mean() < 0.03
    assert 0.003 < (minutes > 60).mean() < 0.03
    assert 0 < (minutes < 0).sum() < 60
    assert 0 < (distance > 100).sum() < 0.003 * len(trips)
    assert 0.88 < len(_clean(trips, month)) / len(trips) < 0.97
    # The missing block's timestamps are whole minutes, as in the real files.
    block = trips["passenger_count"].isna()
    assert (trips.loc[block, "lpep_pickup_datetime"].dt.second == 0).all()
    assert (trips.loc[~block, "lpep_pickup_datetime"].dt.second != 0).mean() > 0.9


def test_missing_block_share_follows_the_real_years() -> None:
    def share(month: str) -> float:
        return float(_trips(month, SyntheticParams(rows_per_month=10000))["passenger_count"].isna().mean())

    assert 0.42 < share("2021-01") < 0.52  # 47% in the real January 2021
    assert 0.02 < share("2024-01") < 0.09  # 7% in 2023-02, 4% in 2025-01


def test_shift_slows_every_trip_by_the_speed_factor() -> None:
    # With no long-trip mix, the shift changes nothing but the clock: the same trips, slower.
    calm = SyntheticParams(rows_per_month=5000, shift_month="2030-01", shift_long_trip_share=0.0)
    slow = calm.model_copy(update={"shift_month": "2024-01"})
    before = duration_minutes(_trips("2024-03", calm))
    after = duration_minutes(_trips("2024-03", slow))
    street = before.between(1, 60)
    ratio = (after[street] / before[street]).median()
    assert ratio == pytest.approx(1 / slow.shift_speed_factor, rel=0.02)


def test_calibration_is_a_small_statistics_file() -> None:
    text = resources.files("core.resources").joinpath(CALIBRATION_FILE).read_text()
    assert len(text.encode()) < 350_000  # 19 real months' anchors


# ---------------------------------------------------------------------------------------------
# Slow drift inside a regime: the calendar and the wandering zones.


def test_the_calendar_moves_speed_by_hour_a_few_percent_between_seasons() -> None:
    cal = _calibration()
    january, october = _season(cal, "2024-01"), _season(cal, "2024-10")
    change = np.abs(october.speed[..., 0] - january.speed[..., 0])
    # Real months: Oct-Dec run ~5% slower than January or July; nowhere near the 43% of the shift.
    assert 0.01 < change.mean() < 0.1
    assert _season(cal, "2024-01").speed.tolist() != _season(cal, "2025-01").speed.tolist()  # the trend


def test_the_trend_stays_flat_beyond_the_real_months() -> None:
    cal = _calibration()
    assert _season(cal, "2030-03").speed.tolist() == _season(cal, "2029-03").speed.tolist()


def test_zones_drift_slowly_and_reproducibly() -> None:
    def corr(a: str, b: str) -> float:
        return float(np.corrcoef(_zone_drift(42, a).ravel(), _zone_drift(42, b).ravel())[0, 1])

    assert corr("2024-01", "2024-02") > 0.6
    assert corr("2024-01", "2024-02") > corr("2024-01", "2024-07") > corr("2024-01", "2026-01")
    assert np.array_equal(_zone_drift(42, "2024-03"), _zone_drift.__wrapped__(42, "2024-03"))
    assert not np.array_equal(_zone_drift(42, "2024-03"), _zone_drift(43, "2024-03"))


# ---------------------------------------------------------------------------------------------
# The regime shift, seen the way the pipeline sees it: Evidently on features + prediction.


@pytest.fixture(scope="module")
def drift_frames() -> dict[str, pd.DataFrame]:
    from sklearn.ensemble import HistGradientBoostingRegressor

    months = ["2024-01", "2024-03", "2024-04", "2024-05", "2024-06"]
    clean = {m: _clean(_trips(m), m) for m in months}
    # A small model keeps the test quick; the prediction column only needs a plausible model.
    model = HistGradientBoostingRegressor(
        max_iter=40,
        max_leaf_nodes=31,
        categorical_features=[f in CATEGORICAL_FEATURES for f in FEATURES],
        random_state=0,
    )
    train = clean["2024-01"]
    model.fit(feature_frame(train).to_numpy(), duration_minutes(train).to_numpy())
    frames = {}
    for month, trips in clean.items():
        frame = feature_frame(trips)
        frame["prediction"] = model.predict(frame.to_numpy())
        frame["target"] = duration_minutes(trips).to_numpy()
        frames[month] = frame
    return frames


def _dataset_drift(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[float, list[str]]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = [*FEATURES, "prediction"]
    definition = DataDefinition(
        numerical_columns=[c for c in columns if c not in CATEGORICAL_FEATURES],
        categorical_columns=list(CATEGORICAL_FEATURES),
    )

    def dataset(frame: pd.DataFrame) -> Dataset:
        sample = frame[columns].sample(n=min(20000, len(frame)), random_state=0)
        return Dataset.from_pandas(sample, data_definition=definition)

    snapshot = Report([DataDriftPreset(drift_share=0.5)]).run(
        current_data=dataset(current), reference_data=dataset(reference)
    )
    share, drifted = None, []
    for metric in snapshot.dict()["metrics"]:
        name = metric["metric_name"]
        if name.startswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if str(config.get("type", "")).endswith("ValueDrift") and metric["value"] >= config["threshold"]:
            drifted.append(config["column"])
    assert share is not None
    return share, drifted


def _mae_by_month(drift_frames: dict[str, pd.DataFrame]) -> dict[str, float]:
    """The fixed model's mean absolute error in each month."""
    return {
        month: float((frame["prediction"] - frame["target"]).abs().mean())
        for month, frame in drift_frames.items()
    }


def test_consecutive_months_before_the_shift_do_not_drift(drift_frames: dict[str, pd.DataFrame]) -> None:
    share, drifted = _dataset_drift(drift_frames["2024-03"], drift_frames["2024-04"])
    assert share < 0.5, drifted


def test_a_season_inside_a_regime_does_not_drift(drift_frames: dict[str, pd.DataFrame]) -> None:
    share, drifted = _dataset_drift(drift_frames["2024-01"], drift_frames["2024-04"])
    assert share < 0.5, drifted


def test_a_fixed_model_gets_slowly_worse_inside_a_regime(drift_frames: dict[str, pd.DataFrame]) -> None:
    mae = _mae_by_month(drift_frames)
    # Out of sample, three months on, the January model has lost a little, not the shift's 50%+.
    assert mae["2024-01"] < mae["2024-04"] < 1.15 * mae["2024-01"]


def test_the_shift_is_dataset_drift(drift_frames: dict[str, pd.DataFrame]) -> None:
    share, drifted = _dataset_drift(drift_frames["2024-04"], drift_frames["2024-05"])
    assert share >= 0.5, drifted
    assert {"trip_distance", "prediction"} <= set(drifted)


def test_consecutive_months_after_the_shift_do_not_drift(drift_frames: dict[str, pd.DataFrame]) -> None:
    share, drifted = _dataset_drift(drift_frames["2024-05"], drift_frames["2024-06"])
    assert share < 0.5, drifted


def test_a_pre_shift_model_is_much_worse_after_the_shift(drift_frames: dict[str, pd.DataFrame]) -> None:
    mae = _mae_by_month(drift_frames)
    assert mae["2024-03"] < 1.1 * mae["2024-04"] and mae["2024-04"] < 1.1 * mae["2024-03"]
    assert mae["2024-05"] > 1.5 * mae["2024-04"]


# ---------------------------------------------------------------------------------------------
# Calibration against the real months it was derived from.


@pytest.mark.realdata
@pytest.mark.parametrize("month", ["2021-01", "2023-02"])
def test_synthetic_trips_look_like_the_real_month(real_dir: Path, month: str) -> None:
    real = normalize(pq.read_table(real_dir / f"green_tripdata_{month}.parquet"), month).to_pandas()
    fake = _trips(month)
    real_clean, fake_clean = _clean(real, month), _clean(fake, month)

    def close(a: float, b: float, rel: float) -> bool:
        return abs(a / b - 1) < rel

    assert close(duration_minutes(fake_clean).median(), duration_minutes(real_clean).median(), 0.1)
    assert close(fake_clean["trip_distance"].median(), real_clean["trip_distance"].median(), 0.1)
    assert abs(len(fake_clean) / len(fake) - len(real_clean) / len(real)) < 0.02
    assert abs(fake["passenger_count"].isna().mean() - real["passenger_count"].isna().mean()) < 0.03
    assert abs((fake["VendorID"] == 1).mean() - (real["VendorID"] == 1).mean()) < 0.03
    # Zone shares are pooled over 2021-2025 (19 months, 5 of them lockdown months with less East
    # Harlem), so the lockdown era gets more slack.
    zone_slack = 0.05 if month < "2022" else 0.03
    assert abs((fake["PULocationID"] == 74).mean() - (real["PULocationID"] == 74).mean()) < zone_slack
    same_zone = (fake_clean["PULocationID"] == fake_clean["DOLocationID"]).mean()
    assert abs(same_zone - (real_clean["PULocationID"] == real_clean["DOLocationID"]).mean()) < 0.02
