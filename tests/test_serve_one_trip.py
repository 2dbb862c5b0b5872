"""/predict's one-trip route (serve/one_trip_decoder.py, serve/one_trip_route.py) against pydantic's
general path: it accepts only what pydantic accepts, and what it accepts gives the general path's
feature row bit for bit - on real trips, on the 96 snapshot refusals and on generated bodies; and
through the app, the same responses (status, headers, body), log rows and metrics either way."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve.app import create_app
from serve.one_trip import feature_row
from serve.one_trip_decoder import OneTripDecoder
from serve.request_models import SEED_TRIP, Trip
from serve.service import Service
from serve.settings import Settings
from serve.testing import small_model_dir
from serve.trip_columns import locate_trips
from tests.test_serve_columnar import snapshot_refusals, trips
from tests.test_serve_fast_path import _bodies, _invalid, _month, _variants

DECODER = OneTripDecoder()
JSON = {"content-type": "application/json"}


def _pydantic(body: bytes) -> Trip | None:
    try:
        return Trip.model_validate_json(body)
    except Exception:
        return None


def _same(body: bytes) -> list[float] | None:
    """The decoder's row, after checking it against the general path's (None: it declined)."""
    decoded = DECODER.row(body)
    if decoded is None:
        return None
    trip = _pydantic(body)
    assert trip is not None, f"the one-trip decoder accepted what pydantic refuses: {body[:300]!r}"
    row, keys = decoded
    assert keys == len(trip.model_fields_set), body  # what the duplicate-key check counts on
    # Bit for bit, NaN (unknown) included.
    assert np.array(row).tobytes() == np.array(feature_row(trip, locate_trips([trip]))).tobytes(), body
    return row


@pytest.mark.realdata
def test_real_trips_are_decoded_to_the_general_paths_row(real_dir: Path) -> None:
    bodies = _bodies(_month(real_dir, "2021-03", 2000))  # March: the spring-forward night included
    variants = [variant for body in bodies[:200] for variant in _variants(body)]
    taken = 0
    for body in bodies + variants:
        for raw in (orjson.dumps(body), json.dumps(body, indent=1).encode()):
            row = _same(raw)
            by_coordinates = any(k.endswith("_longitude") for k in body)
            if by_coordinates:
                assert row is None  # their zones are looked up on pydantic's path
            else:
                assert row is not None, f"a real trip given by zone IDs must take the one-trip route: {raw!r}"
                taken += 1
    assert taken > 2 * len(bodies)


@pytest.mark.realdata
def test_real_trips_made_invalid_are_left_to_pydantic(real_dir: Path) -> None:
    bodies = _bodies(_month(real_dir, "2021-02", 50))
    for body in bodies:
        for bad in _invalid(body):
            assert DECODER.row(bad) is None or _same(bad) is not None, bad


def test_the_snapshot_refusals_are_left_to_pydantic() -> None:
    for case in snapshot_refusals():
        body = case["body"].encode()
        if case["path"] == "/predict":
            assert DECODER.row(body) is None, body
        else:
            assert DECODER.row(body) is None or _same(body) is not None


def test_forms_the_one_trip_decoder_leaves_to_pydantic() -> None:
    base = {"pu_location_id": 74, "do_location_id": 168, "trip_distance": 2.3}
    declined = [
        {**base, "pickup_datetime": "2021-01-15T08:30:00Z"},  # an offset
        {**base, "pickup_datetime": "2021-01-15T08:30:00.1234567"},  # beyond microseconds
        {**base, "pickup_datetime": "2021-03-14T02:30:00"},  # skipped by the spring-forward change
        {**base, "pickup_datetime": "2021-02-29T08:30:00"},
        {**base, "pickup_datetime": "1999-12-31T23:00:00"},
        {**base, "pickup_hour": 8, "day_of_week": 1},  # a mix of the two APIs' names
        {**base, "pickup_datetime": "2021-01-15T08:30:00", "vendor_id": True},
        {**base, "pickup_datetime": "2021-01-15T08:30:00", "passenger_count": 2.0},  # pydantic takes it
        {**base, "pickup_datetime": "2021-01-15T08:30:00", "pu_location_id": None},
        {**base, "pickup_datetime": None},
        SEED_TRIP,  # coordinates
    ]
    for trip in declined:
        assert DECODER.row(orjson.dumps(trip)) is None, trip
    taken = [
        {**base, "pickup_datetime": when}
        for when in (
            "2021-01-15t08:30:00",
            "2021-01-15 08:30",
            "2021-01-15T08:30:00.5",
            "2021-01-23T12:57:43.073124",
            "2021-11-07T01:30:00",  # shown twice in the autumn: that wall-clock time
            "2021-03-14T03:00:00",
            "2024-02-29T23:59:59",
            "2000-01-01T00:00:00",
            "2099-12-31T23:59:59",
        )
    ]
    # The original API's names, given by zone IDs, are taken.
    taken += [{**base, "hour": 23.999999999999996, "day_of_week": 6, "month": 3}]
    taken += [{**base, "pickup_hour": 0, "pickup_dow": 0, "pickup_month": 12, "trip_type": None}]
    for trip in taken:
        assert _same(orjson.dumps(trip)) is not None, trip
    escaped = b'{"pu_location_id": 74, "do_location_id": 168, "trip_distance": 2.3, "pickup_datetime": "\\u0032021-01-15T08:30:00"}'  # noqa: E501
    assert _same(escaped) is not None


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trips(), st.booleans())
def test_generated_trips_are_accepted_only_as_pydantic_accepts(trip: dict[str, Any], spaced: bool) -> None:
    _same(json.dumps(trip, indent=1 if spaced else None).encode())


def test_answers_log_rows_and_metrics_are_the_same_with_the_one_trip_route_and_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the app: the same responses byte for byte (headers included), the same prediction
    log rows and the same request counts, whether /predict's route answers or FastAPI's."""
    models = small_model_dir(tmp_path, seed=3)
    base = {"pu_location_id": 74, "do_location_id": 168, "trip_distance": 2.3}
    bodies = [
        orjson.dumps({**base, "pickup_datetime": f"2021-0{m}-1{d}T0{h}:30:00", "vendor_id": 2})
        for m in range(1, 4)
        for d in range(3)
        for h in range(3, 6)
    ]
    bodies += [orjson.dumps({**base, "pickup_hour": 17.5, "pickup_dow": 4, "ratecode_id": None}), b"{}"]
    bodies += [orjson.dumps(SEED_TRIP), orjson.dumps({**base, "pickup_datetime": "2021-01-15T08:30:00Z"})]

    async def post(log: Path) -> tuple[list[tuple[int, list[tuple[bytes, bytes]], bytes]], str]:
        app = create_app(Settings(models_dir=models, compile="off", watch_interval_s=0, prediction_log=log))
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            replies = []
            for body in bodies:
                reply = await client.post("/predict", content=body, headers=JSON)
                replies.append((reply.status_code, reply.headers.raw, reply.content))
            metrics = (await client.get("/metrics")).text
        requests = [line for line in metrics.splitlines() if line.startswith("autoops_http_requests_total")]
        return replies, "\n".join(sorted(requests))

    def logged(log: Path) -> list[tuple[Any, ...]]:
        with sqlite3.connect(log) as conn:
            query = "SELECT model_version, n_rows, features, predictions FROM requests ORDER BY id"
            return conn.execute(query).fetchall()

    taken = []
    answer_one = Service.answer_one

    def counting(self: Service, body: bytes) -> bytes | None:
        answer = answer_one(self, body)
        taken.append(answer is not None)
        return answer

    monkeypatch.setattr(Service, "answer_one", counting)
    fast = asyncio.run(post(tmp_path / "fast.sqlite"))
    assert sum(taken) == len(bodies) - 3  # the last three are the general path's either way
    monkeypatch.setattr(Service, "answer_one", lambda self, body: None)
    general = asyncio.run(post(tmp_path / "general.sqlite"))
    assert fast == general
    assert [status for status, _, _ in fast[0]][-4:] == [200, 422, 200, 200]
    assert 'endpoint="/predict",method="POST",status="200"' in fast[1]
    assert logged(tmp_path / "fast.sqlite") == logged(tmp_path / "general.sqlite")
    assert len(logged(tmp_path / "fast.sqlite")) == len(bodies) - 1


def test_a_body_sent_in_chunks_is_answered_and_one_over_the_limit_refused(tmp_path: Path) -> None:
    """No Content-Length: the body arrives in several messages and is counted against the limit as
    it does (serve/app.py); the one-trip route reads it whole, or hands the 413 to the route."""
    app = create_app(
        Settings(
            models_dir=small_model_dir(tmp_path, seed=4),
            compile="off",
            watch_interval_s=0,
            prediction_log=None,
            max_batch=2,
        )
    )
    trip = orjson.dumps(
        {"pu_location_id": 74, "do_location_id": 168, "trip_distance": 2.3, "pickup_hour": 8, "pickup_dow": 1}
    )

    async def chunks(body: bytes) -> Any:
        for start in range(0, len(body), 7):
            yield body[start : start + 7]

    async def post() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            headers = {"content-type": "application/json"}
            whole = await client.post("/predict", content=trip, headers=headers)
            chunked = await client.post("/predict", content=chunks(trip), headers=headers)
            too_large = await client.post("/predict", content=chunks(trip + b" " * 70_000), headers=headers)
            return whole, chunked, too_large

    whole, chunked, too_large = asyncio.run(post())
    assert "content-length" not in chunked.request.headers
    assert whole.status_code == chunked.status_code == 200
    assert whole.content == chunked.content
    assert too_large.status_code == 413
