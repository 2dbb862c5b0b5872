"""Schemathesis against the service's own OpenAPI schema, on the real server (uvicorn subprocess).

Every operation gets schema-valid and schema-invalid requests; every check schemathesis has
must hold: no 5xx, documented status codes and content types, responses that match their
schema, invalid data refused, valid data accepted. Bounded examples keep it well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from serve.app import create_app
from serve.settings import Settings
from serve.testing import ServerProcess, sklearn_server_env, small_model_dir

MAX_BATCH = 20


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("fuzz")
    # The sklearn estimator: the fuzz is about the HTTP contract, not the predictor.
    env = sklearn_server_env(
        small_model_dir(work, seed=3),
        AUTOOPS_PREDICTION_LOG=str(work / "log.sqlite"),
        AUTOOPS_ADMIN_TOKEN="fuzz-token",
        AUTOOPS_MAX_BATCH=str(MAX_BATCH),
    )
    with ServerProcess(cwd=Path(work), env=env, args=("--workers", "1")) as server:
        yield server


# The schema of an app built like the server's; test_the_server_serves_this_schema checks they are
# the same. (schemathesis' lazy fixture loader does not work with pytest 9, so it is built here.)
SCHEMA = create_app(Settings(max_batch=MAX_BATCH, prediction_log=None, admin_token="fuzz-token")).openapi()
schema = schemathesis.openapi.from_dict(SCHEMA)


def test_the_server_serves_this_schema(fuzz_server: ServerProcess) -> None:
    assert httpx.get(f"{fuzz_server.url}/openapi.json").json() == SCHEMA


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_contract(case: schemathesis.Case, fuzz_server: ServerProcess) -> None:
    if case.path == "/predict_batch" and _trip_count(case.body) > MAX_BATCH:
        # Over maxItems: refused as a 413 naming the limit, counted before any trip is validated
        # (schemathesis expects a 4xx from its own list for schema-violating data).
        response = case.call(base_url=fuzz_server.url)
        assert response.status_code == 413 and response.json()["max_batch"] == MAX_BATCH, response.text
        return
    if not _has_coordinates(case.body):
        case.call_and_validate(base_url=fuzz_server.url)
        return
    # Whether a point lies in a taxi zone is beyond JSON Schema: a schema-valid point at sea is a
    # 422 that names it. Every other check still applies.
    response = case.call_and_validate(base_url=fuzz_server.url, excluded_checks=[positive_data_acceptance])
    if response.status_code == 422 and case.meta is not None and case.meta.generation.mode.name == "POSITIVE":
        assert {e["type"] for e in response.json()["detail"]} == {"outside_taxi_zones"}, response.text


def _has_coordinates(body: object) -> bool:
    trips = body.get("trips") if isinstance(body, dict) else body
    candidates = trips if isinstance(trips, list) else [body]
    return any(isinstance(t, dict) and any(k.endswith("itude") for k in t) for t in candidates)


def _trip_count(body: object) -> int:
    trips = body.get("trips") if isinstance(body, dict) else body
    return len(trips) if isinstance(trips, list) else 0
