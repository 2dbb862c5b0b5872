"""/predict's single-trip fast path (serve/one_trip.py, predict_row) against the general path
that batches take (trip_columns -> feature_matrix -> predict), on real trips: the same features,
the same minutes (1e-9), the same errors."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest

import serve.predictor as predictor_module
from core.features import feature_matrix, filter_mask
from core.model import load_model
from core.params import FilterParams
from serve.app import create_app
from serve.model_store import DirSource
from serve.one_trip import feature_row
from serve.predictor import CompiledPredictor, SklearnPredictor, compile_model
from serve.request_models import Trip
from serve.settings import Settings
from serve.testing import features_with_target, train_model_dir
from serve.trip_columns import locate_trips, trip_columns

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(predictor_module.find_compiler() is None, reason="no C compiler (gcc/clang)"),
]

# Trips given by coordinates (the Empire State Building to Rockefeller Center), and one at sea.
MIDTOWN = {"pickup_longitude": -73.9857, "pickup_latitude": 40.7484}
ROCKEFELLER = {"dropoff_longitude": -73.9787, "dropoff_latitude": 40.7587}
AT_SEA = {"dropoff_longitude": -73.5, "dropoff_latitude": 40.3}


def _month(real_dir: Path, name: str, rows: int) -> pd.DataFrame:
    trips = pd.read_parquet(real_dir / f"green_tripdata_{name}.parquet")
    start = pd.Timestamp(f"{name}-01")
    kept = trips[filter_mask(trips, start, start + pd.offsets.MonthBegin(), FilterParams())]
    return kept.sample(n=rows, random_state=0).reset_index(drop=True)


def _bodies(trips: pd.DataFrame) -> list[dict[str, Any]]:
    """Real trips as clients send them, optional fields left out where the month has none."""
    bodies = []
    for row in trips.itertuples(index=False):
        body: dict[str, Any] = {
            "pu_location_id": int(row.PULocationID),
            "do_location_id": int(row.DOLocationID),
            "trip_distance": float(row.trip_distance),
            "pickup_datetime": pd.Timestamp(row.lpep_pickup_datetime).isoformat(),
        }
        for field, column in (
            ("vendor_id", "VendorID"),
            ("ratecode_id", "RatecodeID"),
            ("trip_type", "trip_type"),
            ("passenger_count", "passenger_count"),
        ):
            value = getattr(row, column)
            if not pd.isna(value):
                body[field] = int(value)
        bodies.append(body)
    return bodies


def _variants(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Other forms of a real trip: hour + weekday, coordinates at either end, no optional fields."""
    when = pd.Timestamp(body["pickup_datetime"])
    by_hour = {k: v for k, v in body.items() if k != "pickup_datetime"}
    by_hour |= {"pickup_hour": when.hour + when.minute / 60, "pickup_dow": when.dayofweek}
    required = ("pu_location_id", "do_location_id", "trip_distance", "pickup_datetime")
    bare = {k: body[k] for k in required}
    pickup_point = {k: v for k, v in body.items() if k != "pu_location_id"} | MIDTOWN
    both_points = {k: v for k, v in pickup_point.items() if k != "do_location_id"} | ROCKEFELLER
    return [by_hour, bare, pickup_point, both_points]


@pytest.fixture(scope="module")
def real_model(
    real_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, CompiledPredictor, Any]:
    """A small model trained on a real month (so some zones are unseen: missing to the trees) and
    its compiled library."""
    work = tmp_path_factory.mktemp("fast_path")
    train = features_with_target(_month(real_dir, "2021-01", 5000))
    models = train_model_dir(work, train.iloc[:4000], train.iloc[4000:], max_iter=15)
    card = DirSource(models).resolve().card
    estimator = load_model(models / card.model_file, sha256=card.model_sha256)
    compiled = compile_model(estimator, DirSource(models).fingerprint(), work / "cache")
    assert compiled is not None
    return models, work / "cache", compiled, estimator


@pytest.fixture(scope="module")
def real_bodies(real_dir: Path) -> list[dict[str, Any]]:
    bodies = _bodies(_month(real_dir, "2021-02", 1500))
    return bodies + [variant for body in bodies[:100] for variant in _variants(body)]


def test_fast_path_features_and_minutes_equal_the_general_path(
    real_model: tuple[Path, Path, CompiledPredictor, Any], real_bodies: list[dict[str, Any]]
) -> None:
    _, _, compiled, estimator = real_model
    sklearn = SklearnPredictor(estimator)
    general_rows, fast_rows = [], []
    for body in real_bodies:
        trip = Trip.model_validate_json(orjson.dumps(body))
        located = locate_trips([trip])
        general_rows.append(feature_matrix(trip_columns([trip], located))[0])
        fast_rows.append(feature_row(trip, located))
    general = np.array(general_rows)
    fast = np.array(fast_rows)
    # Bit for bit, missing values included.
    assert np.array_equal(fast, general, equal_nan=True)
    assert np.isnan(fast).any()  # the real months leave optional fields unknown: that case is covered

    by_row = np.array([compiled.predict_row(row) for row in fast_rows])
    one_row = np.array([compiled.predict(general[i : i + 1])[0] for i in range(len(general))])
    assert np.max(np.abs(by_row - one_row)) <= 1e-9
    assert np.max(np.abs(by_row - compiled.predict(general))) <= 1e-9  # the batch path
    some = slice(0, 200)  # sklearn costs ~3 ms a row
    sklearn_rows = np.array([sklearn.predict_row(row) for row in fast_rows[some]])
    assert np.max(np.abs(sklearn_rows - sklearn.predict(general[some]))) <= 1e-9


def _invalid(body: dict[str, Any]) -> list[bytes]:
    """Real trips made invalid in the ways the 422s name, and a point in no zone."""
    changed = [
        {**body, "trip_distance": 0.0},
        {**body, "pu_location_id": 0},
        {**body, "do_location_id": 266},
        {**body, "pickup_datetime": "2021-03-14T02:30:00"},  # skipped by the spring-forward change
        {k: v for k, v in body.items() if k != "pickup_datetime"},
        {k: v for k, v in body.items() if k != "do_location_id"} | AT_SEA,
        {**body, "vendor_id": 3},
        {**body, "unknown": 1},
    ]
    duplicate = orjson.dumps(body)[:-1] + b', "trip_distance": 1.0}'
    return [orjson.dumps(b) for b in changed] + [duplicate]


def _as_single(reply: httpx.Response) -> tuple[int, Any]:
    """A one-trip batch's reply as /predict would give it: the error locations without
    ("trips", 0), the answer without the batch's list."""
    data = reply.json()
    if reply.status_code == 200:
        return 200, data["predictions"][0]
    for error in data.get("detail", []):
        if error["loc"][1:3] == ["trips", 0]:
            error["loc"] = [error["loc"][0], *error["loc"][3:]]
    return reply.status_code, data


def test_predict_answers_and_refuses_as_a_one_trip_batch(
    real_model: tuple[Path, Path, CompiledPredictor, Any], real_bodies: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The app's /predict (fast path) against /predict_batch (general path) on real trips and on
    real trips made invalid: the same minutes, the same statuses and error messages."""
    models, cache, _, _ = real_model
    settings = Settings(
        models_dir=models, compiled_cache=cache, watch_interval_s=0, prediction_log=tmp_path / "log.sqlite"
    )
    app = create_app(settings)
    valid = [orjson.dumps(body) for body in real_bodies[:300] + real_bodies[-100:]]
    invalid = [bad for body in real_bodies[:10] for bad in _invalid(body)]

    async def compare() -> None:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            assert app.state.service.holder.current.predictor.kind == "compiled"
            headers = {"content-type": "application/json"}
            refused = 0
            for body in valid + invalid:
                one = await client.post("/predict", content=body, headers=headers)
                in_batch = b'{"trips": [' + body + b"]}"
                batch = await client.post("/predict_batch", content=in_batch, headers=headers)
                status, expected = _as_single(batch)
                assert one.status_code == status, body
                if status == 200:
                    assert math.isclose(one.json()["duration_min"], expected, rel_tol=0, abs_tol=1e-9)
                else:
                    assert one.json() == expected, body
                    refused += 1
            assert refused == len(invalid)

    asyncio.run(compare())
