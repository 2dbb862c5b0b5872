"""/predict_batch's columnar path (serve/batch_columns.py) against pydantic's per-trip path: it
accepts only what pydantic accepts, and what it accepts gives the same columns bit for bit - on
real trips, on the 96 snapshot refusals, and on generated bodies, valid and not."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.features import feature_matrix
from serve.app import create_app
from serve.batch_columns import FIELDS, ColumnarDecoder
from serve.request_body import BodyReader, CappedValidationError, TooManyTrips
from serve.request_models import SEED_TRIP, Trip
from serve.settings import Settings
from serve.testing import small_model_dir
from serve.trip_columns import TripBatch
from tests.test_serve_fast_path import _bodies, _invalid, _month, _variants

MAX_BATCH = 1000
COLUMNAR = ColumnarDecoder(MAX_BATCH)
READER = BodyReader(MAX_BATCH, max_errors=20)


def _pydantic(body: bytes) -> tuple[TripBatch, int] | None:
    """The per-trip path's batch and its trips' key count (None: it refuses the body)."""
    bare = body.lstrip()[:1] == b"["
    try:
        trips = READER._bare(body) if bare else READER._batch(body).trips
    except Exception:
        return None
    return TripBatch.from_trips(trips), sum(len(t.model_fields_set) for t in trips)


def _same(body: bytes) -> TripBatch | None:
    """The columnar path's batch, after checking it against pydantic's (None: it declined)."""
    columnar = COLUMNAR.decode(body, body.lstrip()[:1] == b"[")
    if columnar is None:
        return None
    reference = _pydantic(body)
    assert reference is not None, f"the columnar path accepted what pydantic refuses: {body[:300]!r}"
    (fast, fast_keys), (slow, slow_keys) = columnar, reference
    assert fast_keys == slow_keys, body[:300]  # what the duplicate-key check counts on
    # Bit for bit: the same bytes, NaN (unknown) included.
    assert fast.values.tobytes() == slow.values.tobytes(), body[:300]
    assert fast.micros.tobytes() == slow.micros.tobytes(), body[:300]
    assert (fast.points is None) == (slow.points is None)
    if fast.points is not None:
        for end in ("pickup", "dropoff"):
            for a, b in zip(fast.points[end], slow.points[end], strict=True):  # type: ignore[index]
                assert a.tobytes() == b.tobytes()
    return fast


def test_the_columnar_rows_have_the_trip_fields() -> None:
    """Derived from Trip: a field added there is decoded here too (or the import fails)."""
    assert tuple(Trip.model_fields) == FIELDS


@pytest.mark.realdata
def test_real_trips_are_taken_columnar_with_the_same_columns_and_features(real_dir: Path) -> None:
    trips = _bodies(_month(real_dir, "2021-03", 3000))  # March: the spring-forward night included
    trips += [variant for body in trips[:200] for variant in _variants(body)]
    taken = 0
    for start in range(0, len(trips), MAX_BATCH):
        chunk = trips[start : start + MAX_BATCH]
        for body in (
            orjson.dumps({"trips": chunk}),
            orjson.dumps(chunk),
            json.dumps(chunk, indent=1).encode(),
        ):
            batch = _same(body)
            assert batch is not None, "real trips in the common shape must take the columnar path"
            slow = _pydantic(body)
            assert slow is not None
            fast_features = feature_matrix(batch.columns(batch.locate()))
            slow_features = feature_matrix(slow[0].columns(slow[0].locate()))
            assert fast_features.tobytes() == slow_features.tobytes()
            taken += len(chunk)
    assert taken == 3 * len(trips)


@pytest.mark.realdata
def test_every_real_month_trip_pydantic_refuses_the_columnar_path_refuses(real_dir: Path) -> None:
    """Unfiltered real rows (zero distances, unknown rate codes, ...) one at a time in a valid batch:
    accepted by one path exactly when by the other."""
    raw = pd.read_parquet(real_dir / "green_tripdata_2021-03.parquet").sample(n=2000, random_state=1)
    valid = {
        "pu_location_id": 74,
        "do_location_id": 168,
        "trip_distance": 2.3,
        "pickup_hour": 8,
        "pickup_dow": 1,
    }
    accepted = refused = 0
    for body in _bodies(raw.reset_index(drop=True)) + [
        bad for b in _bodies(raw.iloc[:20]) for bad in _bad(b)
    ]:
        batch = orjson.dumps({"trips": [valid, body]})
        if _pydantic(batch) is None:
            assert COLUMNAR.decode(batch, False) is None, body
            refused += 1
        else:
            assert _same(batch) is not None, body
            accepted += 1
    assert accepted and refused


def _bad(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [orjson.loads(b) for b in _invalid(body)[:-1]]


def snapshot_refusals() -> list[dict[str, Any]]:
    """The 96 requests tests/snapshots/ holds 422s for (path, body and answer), for the fast paths'
    tests: each must leave them all to pydantic."""
    cases = json.loads((Path(__file__).parent / "snapshots" / "serve_422_3743ab5.json").read_text())
    assert len(cases) == 96
    return cases


def test_the_snapshot_refusals_are_left_to_pydantic() -> None:
    """The 96 requests tests/snapshots/ holds 422s for, each as a batch and in a batch."""
    for case in snapshot_refusals():
        body = case["body"].encode()
        if case["path"] == "/predict_batch":
            assert COLUMNAR.decode(body, body.lstrip()[:1] == b"[") is None, body
        for batch in (body, b'{"trips": [' + body + b"]}", b"[" + body + b"]"):
            assert COLUMNAR.decode(batch, batch.lstrip()[:1] == b"[") is None or _same(batch) is not None


def test_forms_the_columnar_path_leaves_to_pydantic() -> None:
    base = {"pu_location_id": 74, "do_location_id": 168, "trip_distance": 2.3}
    declined = [
        {**base, "pickup_datetime": "2021-01-15T08:30:00Z"},  # an offset
        {**base, "pickup_datetime": "2021-03-14T02:30:00"},  # skipped by the spring-forward change
        {**base, "pickup_datetime": "2021-02-29T08:30:00"},
        {**base, "pickup_datetime": "2021-01-15T08:30:00.1234567"},
        {**base, "pickup_hour": 8, "day_of_week": 1},  # a mix of the two APIs' names
        {**base, "pickup_datetime": "2021-01-15T08:30:00", "vendor_id": True},
    ]
    for trip in declined:
        assert COLUMNAR.decode(orjson.dumps({"trips": [trip]}), False) is None, trip
    duplicate = b'{"trips": [{"trip_distance": 9, "pu_location_id": 74, "do_location_id": 168, "pickup_hour": 8, "pickup_dow": 1, "trip_distance": 2}]}'  # noqa: E501
    with pytest.raises(CappedValidationError) as refusal:
        READER.trips(duplicate)
    assert refusal.value.errors()[0]["type"] == "duplicate_key"
    with pytest.raises(TooManyTrips):
        READER.trips(orjson.dumps([SEED_TRIP] * (MAX_BATCH + 1)))
    # The seed's own request, bare array and names, is taken.
    assert (
        _same(orjson.dumps([SEED_TRIP, {**base, "hour": 23.999999999999996, "day_of_week": 6}])) is not None
    )


# Values each field is tried with: valid ones of every form and the invalid ones pydantic names.
NUMBERS = st.one_of(
    st.sampled_from([0, 1, 2, 6, 9, 99, 264, 265, 266, -1, 1.0, 2.0, -0.0, 0.5, 23.999999999999996, 24, 100]),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-200, max_value=300),
    st.integers(min_value=-(2**70), max_value=2**70),
)
OTHERS = st.sampled_from([None, True, False, "3", "", [], {}, 1e300])
DATETIMES = st.one_of(
    st.datetimes(
        min_value=pd.Timestamp("1999-12-31").to_pydatetime(),
        max_value=pd.Timestamp("2100-01-02").to_pydatetime(),
    ).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat(sep=" ", timespec="minutes")),
    st.sampled_from(
        [
            "2021-03-14T02:30:00",
            "2021-03-14T03:30:00",
            "2021-11-07T01:30:00",
            "2024-02-29T00:00:00",
            "2023-02-29T00:00:00",
            "2021-01-15t08:30:00.5",
            "2021-01-15T08:30:00+01:00",
            "2021-01-15T24:00:00",
            "2021-01-15T08:60:00",
            "2021-1-15T08:30:00",
            "20210115T083000",
            "２０２１-01-15T08:30:00",
        ]
    ),
)
COORDINATES = {
    "pickup_longitude": -73.9857,
    "pickup_latitude": 40.7484,
    "dropoff_longitude": -73.9881,
    "dropoff_latitude": 40.7614,
}


@st.composite
def trips(draw: st.DrawFn) -> dict[str, Any]:
    base = draw(
        st.sampled_from(
            [
                {
                    "pu_location_id": 74,
                    "do_location_id": 168,
                    "trip_distance": 2.3,
                    "pickup_datetime": "2021-01-15T08:30:00",
                },
                {
                    "pu_location_id": 41,
                    "do_location_id": 42,
                    "trip_distance": 0.9,
                    "pickup_hour": 17.5,
                    "pickup_dow": 4,
                },
                SEED_TRIP,
                {**COORDINATES, "trip_distance": 1.0, "pickup_datetime": "2021-06-01T12:00:00"},
            ]
        )
    )
    trip = dict(base)
    for field in draw(st.lists(st.sampled_from([*FIELDS, "surge"]), max_size=4)):
        if draw(st.booleans()) and field in trip:
            del trip[field]
        elif field.endswith(("datetime",)):
            trip[field] = draw(st.one_of(DATETIMES, NUMBERS, OTHERS))
        else:
            trip[field] = draw(st.one_of(NUMBERS, NUMBERS, OTHERS, DATETIMES))
    return trip


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(trips(), min_size=0, max_size=6), st.booleans(), st.booleans())
def test_generated_batches_are_accepted_only_as_pydantic_accepts(
    batch: list[dict[str, Any]], bare: bool, spaced: bool
) -> None:
    document: Any = batch if bare else {"trips": batch}
    body = json.dumps(document, indent=1 if spaced else None).encode()
    _same(body)


def test_answers_are_the_same_with_the_columnar_path_and_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the app: the same predictions (bit for bit) and the same zones either way."""
    app = create_app(
        Settings(
            models_dir=small_model_dir(tmp_path, seed=3),
            compile="off",
            watch_interval_s=0,
            prediction_log=None,
        )
    )
    base = {"pu_location_id": 74, "do_location_id": 168, "trip_distance": 2.3}
    batch = [
        {**base, "pickup_datetime": f"2021-0{m}-1{d}T0{h}:30:00"}
        for m in range(1, 7)
        for d in range(7)
        for h in range(3, 10)  # not 02:30 on 2021-03-14: it never happened in New York
    ] + [SEED_TRIP, {**base, "pickup_hour": 17.5, "pickup_dow": 4, "vendor_id": None}]
    body = orjson.dumps({"trips": batch})
    assert _same(body) is not None

    async def post() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            reply = await client.post(
                "/predict_batch", content=body, headers={"content-type": "application/json"}
            )
            assert reply.status_code == 200
            return reply.json()

    columnar = asyncio.run(post())
    monkeypatch.setattr(ColumnarDecoder, "decode", lambda self, body, bare: None)
    per_trip = asyncio.run(post())
    assert columnar == per_trip
    assert np.array(columnar["predictions"]).tobytes() == np.array(per_trip["predictions"]).tobytes()
    assert columnar["zones"][-2] is not None
