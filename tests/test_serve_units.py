"""The serving building blocks in-process: request schema -> pipeline features, the compiled
predictor and its parity with the trained model, settings, and the prediction log -> drift.

The real server (a uvicorn subprocess) is exercised in tests/test_serve.py.

Size (~770 lines): the building blocks share the trained model fixtures (a fit per file otherwise).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

import core.compiled_trees as predictor_module
from core.features import FEATURES, REQUIRED_INPUTS, TARGET, feature_frame, feature_matrix, filter_mask
from core.model import load_model
from core.params import DriftParams, FilterParams
from serve.app import create_app
from serve.export_log import export, read_log
from serve.model_store import CARD_FILE, REGISTRY_FILE, DirSource, ModelLoadError
from serve.prediction_log import PredictionLog
from serve.prediction_log_table import PREDICTION
from serve.predictor import (
    PARITY_TOLERANCE,
    CompiledPredictor,
    SklearnPredictor,
    compile_model,
    load_compiled,
    max_abs_diff,
    probe_features,
)
from serve.request_models import SEED_TRIP, Trip
from serve.settings import DEFAULT_MODELS_DIR, ENV_PREFIX, Settings, SettingsError
from serve.testing import ROOT, features_with_target, random_trips, train_model_dir
from serve.trip_columns import locate_trips, trip_columns
from serve.zones import OutsideZones

HAS_COMPILER = predictor_module.find_compiler() is not None
needs_compiler = pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler (gcc/clang)")


def trips_to_api(trips: pd.DataFrame) -> list[Trip]:
    """Rows of raw trips as the API receives them."""
    out = []
    for row in trips.itertuples(index=False):

        def optional(value: Any) -> int | None:
            return None if pd.isna(value) else int(value)

        out.append(
            Trip(
                pu_location_id=int(row.PULocationID),
                do_location_id=int(row.DOLocationID),
                trip_distance=float(row.trip_distance),
                pickup_datetime=pd.Timestamp(row.lpep_pickup_datetime).to_pydatetime(),
                vendor_id=optional(row.VendorID),
                ratecode_id=optional(row.RatecodeID),
                trip_type=optional(row.trip_type),
                passenger_count=optional(row.passenger_count),
            )
        )
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("units")
    frame = features_with_target(random_trips(4000, seed=1))
    return train_model_dir(work, frame.iloc[:3200], frame.iloc[3200:], max_iter=15)


@pytest.fixture(scope="module")
def estimator(model_dir: Path) -> Any:
    card = DirSource(model_dir).resolve().card
    return load_model(model_dir / card.model_file, sha256=card.model_sha256)


# --- the service computes features with the pipeline's module --------------------------------------


def test_service_imports_the_pipeline_feature_module() -> None:
    import serve.service

    assert serve.service.feature_matrix is feature_matrix


def test_file_names_agree_with_the_pipeline() -> None:
    import core.evaluation
    import core.model
    import core.paths
    import core.training

    assert CARD_FILE == core.model.CARD_FILE
    assert REGISTRY_FILE == core.training.REGISTRY_FILE
    assert DEFAULT_MODELS_DIR == core.paths.MODELS_DIR
    assert PREDICTION == core.evaluation.PREDICTION


def test_api_trips_give_the_training_features() -> None:
    trips = random_trips(300, seed=3)
    expected = feature_frame(trips).to_numpy()
    actual = feature_matrix(trip_columns(trips_to_api(trips)))
    np.testing.assert_array_equal(actual, expected)


def test_hour_and_weekday_instead_of_a_timestamp() -> None:
    trip = Trip(
        pu_location_id=41,
        do_location_id=42,
        trip_distance=1.0,
        pickup_hour=17.5,
        pickup_dow=4,
        pickup_month=3,
    )
    features = dict(zip(FEATURES, feature_matrix(trip_columns([trip]))[0], strict=True))
    assert features["pickup_hour"] == 17.5
    assert features["pickup_dow"] == 4
    assert trip.pickup_local().month == 3


def test_an_offset_timestamp_is_new_york_time() -> None:
    winter = Trip(
        pu_location_id=1, do_location_id=2, trip_distance=1.0, pickup_datetime="2021-01-15T13:30:00Z"
    )
    summer = Trip(
        pu_location_id=1, do_location_id=2, trip_distance=1.0, pickup_datetime="2021-07-15T13:30:00Z"
    )
    naive = Trip(pu_location_id=1, do_location_id=2, trip_distance=1.0, pickup_datetime="2021-01-15T08:30:00")
    assert winter.pickup_local() == naive.pickup_local() == datetime(2021, 1, 15, 8, 30)
    assert summer.pickup_local() == datetime(2021, 7, 15, 9, 30)


BASE = {
    "pu_location_id": 74,
    "do_location_id": 168,
    "trip_distance": 2.3,
    "pickup_datetime": "2021-01-15T08:30:00",
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"pu_location_id": 0}, "pu_location_id"),
        ({"do_location_id": 266}, "do_location_id"),
        ({"pu_location_id": "74"}, "pu_location_id"),
        ({"pu_location_id": True}, "pu_location_id"),
        ({"trip_distance": 0}, "trip_distance"),
        ({"trip_distance": 100.5}, "trip_distance"),
        ({"pickup_datetime": 1610699400}, "pickup_datetime"),
        ({"pickup_datetime": "yesterday"}, "pickup_datetime"),
        ({"pickup_datetime": "1999-12-31T23:59:00"}, "pickup_datetime"),
        ({"pickup_datetime": "0001-01-01T03:00:00Z"}, "pickup_datetime"),
        ({"pickup_datetime": None}, "pickup_datetime"),
        ({"vendor_id": True}, "vendor_id"),
        ({"passenger_count": 1.5}, "passenger_count"),
        ({"vendor_id": 3}, "vendor_id"),
        ({"ratecode_id": 7}, "ratecode_id"),
        ({"trip_type": 0}, "trip_type"),
        ({"passenger_count": 10}, "passenger_count"),
        ({"color": "green"}, "color"),
    ],
)
def test_invalid_fields_are_named(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Trip.model_validate({**BASE, **change})
    assert [err["loc"] for err in info.value.errors()] == [(field,)]


def test_integers_as_json_schema_defines_them() -> None:
    trip = Trip.model_validate({**BASE, "pu_location_id": 74.0, "vendor_id": 2.0, "passenger_count": 3.0})
    assert (trip.pu_location_id, trip.vendor_id, trip.passenger_count) == (74, 2, 3)
    assert type(trip.pu_location_id) is int


@pytest.mark.parametrize(
    "body",
    [
        {k: v for k, v in BASE.items() if k != "pickup_datetime"},  # no pickup time at all
        {**BASE, "pickup_hour": 8.5, "pickup_dow": 4},  # two pickup times
        {**{k: v for k, v in BASE.items() if k != "pickup_datetime"}, "pickup_hour": 8.5},  # no weekday
    ],
)
def test_exactly_one_pickup_time(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="pickup_datetime or as pickup_hour"):
        Trip.model_validate(body)


@pytest.mark.parametrize("field", REQUIRED_INPUTS[1:])
def test_required_inputs_are_required(field: str) -> None:
    api_name = {"PULocationID": "pu_location_id", "DOLocationID": "do_location_id"}.get(field, field)
    with pytest.raises(ValidationError) as info:
        Trip.model_validate({k: v for k, v in BASE.items() if k != api_name})
    error = info.value.errors()[0]
    if field in ("PULocationID", "DOLocationID"):  # a zone, or coordinates: the message names both
        assert error["loc"] == () and api_name in error["msg"] and "longitude" in error["msg"]
    else:
        assert error["loc"] == (api_name,)


# --- settings --------------------------------------------------------------------------------------


@pytest.fixture
def autoops_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No AUTOOPS_* variables but those the test sets."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    return monkeypatch


def test_settings_from_environment(autoops_env: pytest.MonkeyPatch) -> None:
    autoops_env.setenv("AUTOOPS_MAX_BATCH", "50")
    autoops_env.setenv("AUTOOPS_PREDICTION_LOG", "off")
    autoops_env.setenv("AUTOOPS_MODEL_URI", "")
    settings = Settings.from_env(workers=3, port=None)
    assert (settings.max_batch, settings.prediction_log, settings.model_uri, settings.workers) == (
        50,
        None,
        None,
        3,
    )
    # What `python -m serve` hands its workers reads back as the same settings.
    for name, value in settings.to_env().items():
        autoops_env.setenv(name, value)
    assert Settings.from_env() == settings


def test_bad_settings_name_the_variable(autoops_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="AUTOOPS_COLOUR"):
        Settings.from_env(colour="green")
    autoops_env.setenv("AUTOOPS_MAX_BATCH", "0")
    with pytest.raises(SettingsError) as info:
        Settings.from_env()
    assert str(info.value) == "AUTOOPS_MAX_BATCH: Input should be greater than or equal to 1"


# --- the models/ source ----------------------------------------------------------------------------


def test_a_model_file_from_another_run_is_refused(model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "models"
    broken.mkdir()
    (broken / CARD_FILE).write_text((model_dir / CARD_FILE).read_text())
    (broken / "model.pkl").write_bytes((model_dir / "model.pkl").read_bytes() + b"x")
    with pytest.raises(ModelLoadError, match="does not match the card"):
        DirSource(broken).resolve()
    with pytest.raises(ModelLoadError, match="missing"):
        DirSource(tmp_path / "nowhere").fingerprint()


# --- the compiled predictor ------------------------------------------------------------------------


@needs_compiler
def test_compiled_predictions_equal_sklearn(estimator: Any, model_dir: Path, tmp_path: Path) -> None:
    sha = DirSource(model_dir).fingerprint()
    compiled = compile_model(estimator, sha, tmp_path)
    assert isinstance(compiled, CompiledPredictor)
    # Every zone as pickup and dropoff (most unseen in 3200 training trips), missing optionals.
    probe = probe_features(rows=5000, seed=11)
    assert max_abs_diff(compiled, SklearnPredictor(estimator), probe) <= PARITY_TOLERANCE
    assert compiled.meta["parity_max_abs_diff"] <= PARITY_TOLERANCE
    # A frame's columns reach predict as a Fortran-ordered matrix (evaluate's batches), which the
    # batch path reorders by zone itself: the same doubles as for rows, unseen zones included.
    assert np.array_equal(compiled.predict(np.asfortranarray(probe)), compiled.predict(probe))


@needs_compiler
def test_compiled_once_per_model_version(
    estimator: Any, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = DirSource(model_dir).fingerprint()
    first = compile_model(estimator, sha, tmp_path)
    assert first is not None and (tmp_path / sha / predictor_module.COMPILED_LIB).exists()

    def no_second_compile(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("compiled again")

    import tl2cgen

    monkeypatch.setattr(tl2cgen, "generate_c_code", no_second_compile)
    again = compile_model(estimator, sha, tmp_path)
    assert again is not None and again.lib_dir == first.lib_dir
    assert load_compiled(tmp_path, sha) is not None


def test_no_compiler_serves_sklearn_with_a_warning(
    estimator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(predictor_module, "find_compiler", lambda: None)
    with caplog.at_level(logging.WARNING):
        assert compile_model(estimator, "0" * 64, tmp_path) is None
    assert "no C compiler" in caplog.text


@needs_compiler
def test_a_parity_failure_is_never_served(
    estimator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(predictor_module, "PARITY_TOLERANCE", -1.0)
    with caplog.at_level(logging.WARNING):
        assert compile_model(estimator, "1" * 64, tmp_path) is None
    assert "differs from sklearn" in caplog.text
    assert load_compiled(tmp_path, "1" * 64) is None


@pytest.mark.realdata
@needs_compiler
def test_serving_path_parity_on_real_rows(real_dir: Path, tmp_path: Path) -> None:
    """Real trips through the API schema, the feature module and the compiled trees give the
    trained model's predictions on the pipeline's features, within 1e-6 minutes."""

    def month(name: str, rows: int) -> pd.DataFrame:
        trips = pd.read_parquet(real_dir / f"green_tripdata_{name}.parquet")
        start = pd.Timestamp(f"{name}-01")
        kept = trips[filter_mask(trips, start, start + pd.offsets.MonthBegin(), FilterParams())]
        return kept.sample(n=rows, random_state=0).reset_index(drop=True)

    train = features_with_target(month("2021-01", 20000))
    models = train_model_dir(tmp_path, train.iloc[:16000], train.iloc[16000:], max_iter=40)
    card = DirSource(models).resolve().card
    estimator = load_model(models / card.model_file, sha256=card.model_sha256)
    compiled = compile_model(estimator, card.model_sha256, tmp_path / "cache")
    assert compiled is not None

    current = month("2021-02", 20000)
    trained = estimator.predict(feature_frame(current)[list(FEATURES)].to_numpy())
    features = feature_matrix(trip_columns(trips_to_api(current)))
    served = compiled.predict(features)  # a batch: sorted by zone, predict_batch
    assert np.max(np.abs(served - trained)) <= 1e-6
    one_by_one = np.array([compiled.predict(features[i : i + 1])[0] for i in range(2000)])  # /predict
    assert np.max(np.abs(one_by_one - trained[:2000])) <= 1e-6


# --- the prediction log ----------------------------------------------------------------------------


def _rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    features = feature_frame(random_trips(n, seed=seed)).to_numpy()
    return features, np.linspace(5, 30, n)


def test_log_keeps_the_newest_rows(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "log.sqlite", max_rows=100, flush_rows=40, flush_interval_s=0.05)
    log.start()
    for i in range(5):
        features, predictions = _rows(50, seed=i)
        log.append(features, predictions + i * 100, f"v{i}")
    log.close()
    frame = read_log(tmp_path / "log.sqlite")
    assert len(frame) == 100
    assert set(frame["model_version"]) == {"v3", "v4"}
    assert frame[PREDICTION].is_monotonic_increasing  # oldest first
    assert log.written == 250


def test_log_round_trips_features_exactly(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "log.sqlite", max_rows=10_000, flush_interval_s=0.05)
    log.start()
    features, predictions = _rows(30, seed=7)
    assert np.isnan(features).any()  # unknown optional fields
    log.append(features[:10], predictions[:10], "v1")
    time.sleep(0.2)
    log.append(features[10:], predictions[10:], "v2")
    log.close()
    frame = read_log(tmp_path / "log.sqlite")
    np.testing.assert_array_equal(frame[list(FEATURES)].to_numpy(), features)
    np.testing.assert_array_equal(frame[PREDICTION].to_numpy(), predictions)
    assert list(frame["model_version"]) == ["v1"] * 10 + ["v2"] * 20
    assert frame["timestamp"].dt.tz is not None
    assert len(read_log(tmp_path / "log.sqlite", model_version="v1")) == 10
    assert list(read_log(tmp_path / "log.sqlite", limit=15)[PREDICTION]) == list(predictions[-15:])
    later = frame["timestamp"].iloc[-1].to_pydatetime(warn=False)
    assert set(read_log(tmp_path / "log.sqlite", since=later)["model_version"]) == {"v2"}


def test_workers_share_one_log(tmp_path: Path) -> None:
    """Two writers (as two uvicorn workers would be) on one file: every row once, in one sequence."""
    path = tmp_path / "log.sqlite"
    logs = [PredictionLog(path, max_rows=100_000, flush_rows=7, flush_interval_s=0.01) for _ in range(2)]
    for log in logs:
        log.start()
    features, predictions = _rows(3)
    for i in range(300):
        logs[i % 2].append(features, predictions, f"w{i % 2}")
    for log in logs:
        log.close()
    with sqlite3.connect(path) as conn:
        last_rows = [r[0] for r in conn.execute("SELECT last_row FROM requests ORDER BY id")]
    assert last_rows == list(range(3, 901, 3))
    assert len(read_log(path)) == 900


def test_a_log_for_other_features_is_refused(tmp_path: Path) -> None:
    from serve.prediction_log_sqlite import connect
    from serve.prediction_log_table import LogSchemaError

    path = tmp_path / "log.sqlite"
    connect(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '[\"pu_zone\"]' WHERE key = 'features'")
    with pytest.raises(LogSchemaError, match="start a new log"):
        PredictionLog(path, max_rows=100).start()


def test_log_queue_is_bounded_not_blocking(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "log.sqlite", max_rows=1000, max_pending_rows=10)
    features, predictions = _rows(4)
    for _ in range(3):
        log.append(features, predictions, "v1")  # not started: nothing drains the queue
    assert (log.dropped, log._pending) == (4, 8)


def test_a_locked_log_never_blocks_requests(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    log = PredictionLog(path, max_rows=1000, flush_rows=1, flush_interval_s=0.01)
    log.start()
    # Wait for the log's own writer to let go (it may be mid-transaction), then hold the database
    # as another process would.
    blocker = sqlite3.connect(path, timeout=10)
    blocker.execute("BEGIN EXCLUSIVE")
    features, predictions = _rows(20)
    for _ in range(50):
        log.append(features[:1], predictions[:1], "v1")
    # Every request returned while the database was locked, so none of them waited for it (in
    # this one thread, an append that waited for the lock would wait for itself): nothing is
    # written yet, everything is queued or counted as dropped.
    assert log.written == 0
    blocker.rollback()
    blocker.close()
    log.close()
    assert log.written + log.dropped == 50


def test_exported_log_is_drift_stage_input(tmp_path: Path) -> None:
    from core.drift import compute_drift

    log = PredictionLog(tmp_path / "log.sqlite", max_rows=10_000, flush_rows=500)
    log.start()
    features, predictions = _rows(600, seed=5)
    threads = [
        threading.Thread(target=log.append, args=(features[i::3], predictions[i::3], "v1")) for i in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    out = tmp_path / "served.parquet"
    assert export(tmp_path / "log.sqlite", out) == (600, [])
    current = pd.read_parquet(out)
    assert {*FEATURES, PREDICTION} <= set(current.columns)
    reference = feature_frame(random_trips(600, seed=6))
    reference[PREDICTION] = np.linspace(5, 30, 600)
    summary, _ = compute_drift(reference, current, DriftParams(sample_rows=1000))
    assert summary["n_columns"] == len(FEATURES) + 1
    assert TARGET not in current.columns


def test_a_full_disk_is_reported_as_such(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from serve.prediction_log_sqlite import connect

    log = PredictionLog(tmp_path / "log.sqlite", max_rows=10_000_000)
    conn = connect(log.path)
    # SQLite's own cap on the file size: the same SQLITE_FULL error a full disk gives.
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 1}")
    features, predictions = _rows(5000)
    log.append(features, predictions, "v1")
    with caplog.at_level(logging.WARNING, logger="serve.prediction_log"):
        log._flush(conn)
    conn.close()
    assert log.dropped == 5000
    assert "database or disk is full" in caplog.text and "no transaction" not in caplog.text


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["trip_distance", "pickup_hour"])
def test_nan_and_infinity_are_refused_as_not_finite(value: str, field: str) -> None:
    body = {
        "pu_location_id": 74,
        "do_location_id": 168,
        "trip_distance": 2.3,
        "pickup_hour": 8,
        "pickup_dow": 1,
    }
    text = json.dumps(body).replace(f'"{field}": {body[field]}', f'"{field}": {value}')
    with pytest.raises(ValidationError) as info:
        Trip.model_validate_json(text)
    assert [(e["loc"], e["msg"]) for e in info.value.errors()] == [
        ((field,), "Input should be a finite number")
    ]


@pytest.mark.parametrize(
    ("value", "local"),
    [
        ("2021-01-15T08:30:00", datetime(2021, 1, 15, 8, 30)),
        ("2021-01-15T08:30", datetime(2021, 1, 15, 8, 30)),
        ("2021-01-15 08:30:00.25", datetime(2021, 1, 15, 8, 30, 0, 250000)),
        ("2021-01-15T13:30:00Z", datetime(2021, 1, 15, 8, 30)),
        ("2021-07-15T08:30:00-04:00", datetime(2021, 7, 15, 8, 30)),
        ("2024-11-03T01:30:00", datetime(2024, 11, 3, 1, 30)),  # occurred twice: the wall clock's
        ("2024-03-10T03:30:00", datetime(2024, 3, 10, 3, 30)),  # just after the skipped hour
        ("2024-03-10T02:30:00-05:00", datetime(2024, 3, 10, 3, 30)),  # an offset makes it exist
    ],
)
def test_pickup_datetime_in_iso_8601_extended_form(value: str, local: datetime) -> None:
    assert Trip.model_validate({**BASE, "pickup_datetime": value}).pickup_local() == local


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1700000000", "extended form"),
        ("1700000000000", "extended form"),
        ("1700000000.5", "extended form"),
        ("20240115", "extended form"),
        ("20240115T083000Z", "extended form"),
        ("2024-01-15", "extended form"),
        ("2024-03-10T02:30:00", "does not exist in New York"),
        ("2006-04-02T02:15", "does not exist in New York"),  # before 2007: the first Sunday of April
    ],
)
def test_pickup_datetime_refusals_say_what_is_expected(value: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Trip.model_validate({**BASE, "pickup_datetime": value})
    [error] = info.value.errors()
    assert error["loc"] == ("pickup_datetime",) and message in error["msg"]


def test_an_hour_just_short_of_midnight_stays_on_its_day() -> None:
    trip = Trip.model_validate({**BASE_BY_PARTS, "pickup_hour": 23.999999999999996, "pickup_dow": 1})
    features = dict(zip(FEATURES, feature_matrix(trip_columns([trip]))[0], strict=True))
    assert trip.pickup_local().weekday() == 1 and features["pickup_dow"] == 1
    assert 23.99 < features["pickup_hour"] < 24


# --- the contract stays, except where issues 20 and 22 changed it on purpose ---------------------------

SNAPSHOTS = Path(__file__).parent / "snapshots"
# What the code before issues 20 and 22 (commit 3743ab5) answered and documented: its OpenAPI
# document (max_batch 20, as below) and 96 invalid requests' 422s (a replay of the requests listed
# there through that commit's app, `git archive 3743ab5`).
OPENAPI_BEFORE = SNAPSHOTS / "openapi_3743ab5.json"
ANSWERS_BEFORE = SNAPSHOTS / "serve_422_3743ab5.json"
CHANGED_ON_PURPOSE = {
    # issue 19: the description names the feature module, which moved to core/features.py
    ("info", "description"),
    # issue 20: the seed's names for hour + weekday, in the pickup-time rule and the examples
    ("components", "schemas", "Trip", "allOf"),
    ("components", "schemas", "Trip", "examples"),
    ("components", "schemas", "Trip", "properties", "day_of_week"),
    ("components", "schemas", "Trip", "properties", "hour"),
    ("components", "schemas", "Trip", "properties", "month"),
    # issue 20: /predict_batch also takes a bare array (and shows both forms)
    ("paths", "/predict_batch", "post", "requestBody", "content", "application/json", "examples"),
    ("paths", "/predict_batch", "post", "requestBody", "content", "application/json", "schema", "$ref"),
    ("paths", "/predict_batch", "post", "requestBody", "content", "application/json", "schema", "anyOf"),
    # issue 22: pickup_datetime strictly ISO 8601 extended
    ("components", "schemas", "Trip", "properties", "pickup_datetime", "description"),
    ("components", "schemas", "Trip", "properties", "pickup_datetime", "pattern"),
    # issue 22: errors capped and counted, duplicate keys, 415
    ("components", "schemas", "ValidationErrors", "properties", "detail", "description"),
    ("components", "schemas", "ValidationErrors", "properties", "errors_omitted"),
    ("paths", "/predict", "post", "responses", "415"),
    ("paths", "/predict", "post", "responses", "422", "description"),
    ("paths", "/predict_batch", "post", "responses", "415"),
    ("paths", "/predict_batch", "post", "responses", "422", "description"),
}


def _changed(before: Any, now: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """JSON paths where two documents differ: a key only one has, or a differing leaf or list."""
    if not isinstance(before, dict) or not isinstance(now, dict):
        if before != now:
            yield path
        return
    for key in sorted(set(before) | set(now)):
        if key not in before or key not in now:
            yield (*path, key)
        else:
            yield from _changed(before[key], now[key], (*path, key))


def test_the_openapi_document_changed_only_on_purpose() -> None:
    now = create_app(Settings(max_batch=20, prediction_log=None, admin_token="x")).openapi()
    before = json.loads(OPENAPI_BEFORE.read_text())
    assert set(_changed(before, json.loads(json.dumps(now)))) == CHANGED_ON_PURPOSE


def test_422_answers_are_as_they_were(model_dir: Path) -> None:
    """The same invalid requests get the same 422s (field, type, message) as before the changes."""
    app = create_app(Settings(models_dir=model_dir, compile="off", prediction_log=None, max_batch=20))
    cases = json.loads(ANSWERS_BEFORE.read_text())
    assert len(cases) == 96

    async def replay() -> list[tuple[int, Any]]:
        # No lifespan: every one of these is refused before a model is needed.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answers = []
            for case in cases:
                reply = await client.post(
                    case["path"], content=case["body"].encode(), headers={"content-type": "application/json"}
                )
                answers.append((reply.status_code, reply.json()))
            return answers

    answers = asyncio.run(replay())
    for case, (status, answer) in zip(cases, answers, strict=True):
        assert (status, answer) == (case["status"], case["answer"]), case["body"]


# --- the original Auto-Ops API's field names ---------------------------------------------------------


def test_the_seed_names_are_this_apis_names() -> None:
    """hour / day_of_week / month are pickup_hour / pickup_dow / pickup_month, day_of_week numbered
    Monday = 0 like the features: the seed's day_of_week 1 in June is a Tuesday in June."""
    by_seed = Trip.model_validate({**BASE_BY_PARTS, "hour": 14, "day_of_week": 1, "month": 6})
    ours = Trip.model_validate({**BASE_BY_PARTS, "pickup_hour": 14, "pickup_dow": 1, "pickup_month": 6})
    tuesday = Trip.model_validate({**BASE_BY_PARTS, "pickup_datetime": "2021-06-15T14:00:00"})
    assert datetime(2021, 6, 15).weekday() == 1
    matrices = [feature_matrix(trip_columns([t])) for t in (by_seed, ours, tuesday)]
    np.testing.assert_array_equal(matrices[0], matrices[1])
    np.testing.assert_array_equal(matrices[0], matrices[2])
    assert by_seed.pickup_local().month == 6


BASE_BY_PARTS = {"pu_location_id": 74, "do_location_id": 168, "trip_distance": 2.3}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"hour": 14, "pickup_hour": 14, "day_of_week": 1}, ("hour", "pickup_hour")),
        ({"hour": 14, "day_of_week": 1, "pickup_dow": 1}, ("day_of_week", "pickup_dow")),
        ({"hour": 14, "day_of_week": 1, "month": 6, "pickup_month": 6}, ("month", "pickup_month")),
        ({"hour": 14, "pickup_dow": 1}, ("hour", "pickup_dow")),
        ({"pickup_hour": 14, "pickup_dow": 1, "month": 6}, ("pickup_hour", "month")),
        (
            {"hour": 14, "day_of_week": 1, "pickup_datetime": "2021-06-15T14:00:00"},
            ("pickup_datetime", "hour"),
        ),
    ],
)
def test_ambiguous_seed_and_api_names_are_refused_naming_both(
    fields: dict[str, Any], named: tuple[str, str]
) -> None:
    with pytest.raises(ValidationError) as info:
        Trip.model_validate({**BASE_BY_PARTS, **fields})
    [error] = info.value.errors()
    assert error["loc"] == () and all(name in error["msg"] for name in named), error["msg"]


# --- coordinates -> taxi zones --------------------------------------------------------------------------


def test_the_seed_example_lands_in_midtown_south_and_clinton_east() -> None:
    trip = Trip.model_validate(SEED_TRIP)
    located = locate_trips([trip])
    assert located is not None
    assert located.describe(0) == {
        "pickup_zone": {"location_id": 164, "zone": "Midtown South", "borough": "Manhattan"},
        "dropoff_zone": {"location_id": 48, "zone": "Clinton East", "borough": "Manhattan"},
    }
    by_zone = Trip.model_validate(
        {
            **{k: v for k, v in SEED_TRIP.items() if "itude" not in k},
            "pu_location_id": 164,
            "do_location_id": 48,
        }
    )
    np.testing.assert_array_equal(
        feature_matrix(trip_columns([trip])), feature_matrix(trip_columns([by_zone]))
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pu_location_id": 164}, "not both"),  # zone and coordinates
        ({"pickup_latitude": None}, "null"),
        ({"dropoff_latitude": 91.0}, "less than or equal to 90"),
    ],
)
def test_zone_or_coordinates_not_both(change: dict[str, Any], message: str) -> None:
    body = {**SEED_TRIP, **change}
    with pytest.raises(ValidationError, match=message):
        Trip.model_validate(body)
    missing = {k: v for k, v in SEED_TRIP.items() if k != "dropoff_latitude"}
    with pytest.raises(ValidationError, match="not neither"):
        Trip.model_validate(missing)


def test_a_point_in_no_zone_is_refused_not_guessed() -> None:
    at_sea = Trip.model_validate({**SEED_TRIP, "dropoff_longitude": -73.5, "dropoff_latitude": 40.3})
    with pytest.raises(OutsideZones) as info:
        locate_trips([Trip.model_validate(SEED_TRIP), at_sea])
    assert info.value.points == [(1, "dropoff", -73.5, 40.3)]


@pytest.mark.realdata
def test_every_zone_maps_back_from_points_inside_it() -> None:
    """Against TLC's own polygons: points well inside each of the 263 zones (and on the committed
    polygons' vertices' interior side) map to that zone; the committed file is the source's."""
    import shapely

    from serve.zones import load_zones

    source = Path(__file__).resolve().parents[2] / "shared" / "data" / "tlc" / "taxi_zones.geojson"
    if not source.exists():
        pytest.skip(f"{source} not available")
    features = json.loads(source.read_text())["features"]
    zones = load_zones()
    ids, points = [], []
    for feature in features:
        geom = shapely.geometry.shape(feature["geometry"])
        inner = geom.buffer(-2e-4)  # ~20 m inside every boundary
        for part in getattr(inner, "geoms", [inner]):
            if not part.is_empty:
                ids.append(int(feature["properties"]["LocationID"]))
                points.append(part.representative_point())
    assert len(set(ids)) >= 260  # a few zones are slivers narrower than the margin
    found = zones.locate(shapely.get_x(points), shapely.get_y(points))
    assert (found >= 0).all()
    np.testing.assert_array_equal(zones.location_id[found], ids)
    names = {int(f["properties"]["LocationID"]): f["properties"]["zone"] for f in features}
    assert all(zones.zone[i] == names[int(zones.location_id[i])] for i in range(len(zones.location_id)))


def test_wrk_output_is_parsed_with_its_padding() -> None:
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("serve_bench", ROOT / "bench" / "serve_bench.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    out = (
        "Running 10s test @ http://127.0.0.1:8000\n"
        "  2 threads and 8 connections\n"
        "  Latency Distribution\n"
        "     50%    1.00s \n"
        "     75%  450.00us\n"
        "     90%    2.10ms\n"
        "     99%    1.20m \n"
        "  24000 requests in 10.00s, 3.00MB read\n"
        "  Socket errors: connect 0, read 2, write 0, timeout 1\n"
        "  Non-2xx or 3xx responses: 3\n"
        "Requests/sec:   2400.50 \n"
    )
    run = bench.parse_wrk(out)
    assert (run.rps, run.p50_ms, run.p99_ms, run.errors) == (2400.5, 1000.0, 72000.0, 6)
    with pytest.raises(bench.WrkOutputError, match="no requests/s"):
        bench.parse_wrk("unable to connect to 127.0.0.1:9 Connection refused\n")
