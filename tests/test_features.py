"""The shared feature module: correct calendar features, and one row == the same row in a batch."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.features import FEATURES, feature_frame, feature_matrix

TRIPS = pd.DataFrame(
    {
        "lpep_pickup_datetime": pd.to_datetime(
            ["2024-01-01 00:15:00", "2024-01-06 13:30:00", "2023-02-28 23:59:59", "2021-07-04 08:00:00"]
        ),
        "PULocationID": [74, 1, 265, 42],
        "DOLocationID": [75, 1, 264, 130],
        "trip_distance": [1.5, 12.0, 0.4, 3.3],
        "VendorID": [2, 1, 2, None],
        "RatecodeID": [1, None, 5, 1],
        "trip_type": [1, 2, None, 1],
        "passenger_count": [1, 3, None, 2],
    }
)


def test_calendar_features_match_pandas() -> None:
    frame = feature_frame(TRIPS)
    pickup = TRIPS["lpep_pickup_datetime"]
    assert list(frame["pickup_dow"]) == list(pickup.dt.dayofweek.astype(float))
    expected_hour = pickup.dt.hour + pickup.dt.minute / 60 + pickup.dt.second / 3600
    np.testing.assert_allclose(frame["pickup_hour"], expected_hour)


def test_single_rows_equal_the_batch() -> None:
    batch = feature_matrix(TRIPS)
    for i in range(len(TRIPS)):
        row = {k: np.array([v]) for k, v in TRIPS.iloc[i].to_dict().items()}
        np.testing.assert_array_equal(feature_matrix(row)[0], batch[i])


def test_optional_inputs_may_be_absent() -> None:
    required = TRIPS[["lpep_pickup_datetime", "PULocationID", "DOLocationID", "trip_distance"]]
    frame = feature_frame(required)
    assert list(frame.columns) == list(FEATURES)
    assert frame[["vendor_id", "rate_code", "trip_type", "passenger_count"]].isna().all().all()
    assert frame["same_zone"].tolist() == [0, 1, 0, 0]


def test_zone_codes_fit_native_categorical_support() -> None:
    frame = feature_frame(TRIPS)
    assert frame["pu_zone"].between(0, 254).all() and frame["do_zone"].between(0, 254).all()
