"""The shared back ends on a real PostgreSQL server (tests/pg.py starts a throwaway one):

* MLflow with a PostgreSQL backend store behind a real ``mlflow server``: the train stage registers
  versions, aliases move, and the service loads (and follows) the champion from it;
* the prediction log's shared sink: two service processes write at once (nothing lost, nothing
  duplicated), ``serve.export_log`` and the drift check read everything served, and a sink that
  goes away costs no request (``/health`` and ``/metrics`` say so; rows wait and arrive later).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.features import FEATURES
from core.model import MODEL_FILE, load_model
from serve.testing import (
    ServerProcess,
    features_with_target,
    free_port,
    random_trips,
    small_model_dir,
    train_model_dir,
)
from tests.conftest import stop_group
from tests.pg import PostgresServer, postgres_server

MODEL = "green-taxi-duration"


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


# --- MLflow -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracking_server(pg: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("mlflow-server")
    store = pg.create_database("mlflow")
    port = free_port()
    log = open(work / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host=127.0.0.1",
            f"--port={port}",
            "--workers=1",
            f"--backend-store-uri={store.replace('postgresql://', 'postgresql+psycopg://')}",
            f"--artifacts-destination={work / 'artifacts'}",
            "--serve-artifacts",
        ],
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError((work / "server.log").read_text())
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError((work / "server.log").read_text())
            time.sleep(0.2)
        yield url
    finally:
        # MLflow's server does not always stop on SIGTERM (its uvicorn worker keeps it up).
        stop_group(proc, timeout=10)
        log.close()


def test_mlflow_on_postgres_registers_moves_aliases_and_serves_the_champion(
    tracking_server: str, pg: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    versions = []
    for seed, iters in ((1, 12), (2, 16)):
        frame = features_with_target(random_trips(2500, seed=seed))
        models = train_model_dir(
            tmp_path, frame.iloc[:2000], frame.iloc[2000:], max_iter=iters, seed=seed, use_mlflow=True
        )
        card = json.loads((models / "model_card.json").read_text())
        registry = json.loads((models / "registry.json").read_text())
        assert registry["tracking_uri"] == tracking_server
        versions.append((card, load_model(models / MODEL_FILE, sha256=card["model_sha256"])))
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_server)
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
    # A person's training run registers a version but moves no alias (issue 20, point 5); only the
    # loop's proposal names a challenger, which it does through the same registry call.
    assert [v.version for v in client.search_model_versions(f"name='{MODEL}'")] == ["2", "1"]
    assert not any(a == "challenger" for a in client.get_registered_model(MODEL).aliases)
    client.set_registered_model_alias(MODEL, "challenger", "2")
    # The registry really is in PostgreSQL: the aliases are rows there.
    with psycopg.connect(pg.url("mlflow")) as conn:
        rows = conn.execute("SELECT alias, version FROM registered_model_aliases ORDER BY alias").fetchall()
    assert rows == [("challenger", 2), ("champion", 1)]

    trips = random_trips(50, seed=9)
    body = {
        "trips": [
            {
                "pu_location_id": int(t.PULocationID),
                "do_location_id": int(t.DOLocationID),
                "trip_distance": float(t.trip_distance),
                "pickup_datetime": t.lpep_pickup_datetime.isoformat(),
            }
            for t in trips.itertuples()
        ]
    }
    env = {
        "AUTOOPS_MODEL_URI": f"models:/{MODEL}@champion",
        "MLFLOW_TRACKING_URI": tracking_server,
        "AUTOOPS_COMPILED_CACHE": str(tmp_path / "compiled"),
        "AUTOOPS_PREDICTION_LOG": "off",
        "AUTOOPS_WATCH_INTERVAL_S": "0.5",
    }
    with ServerProcess(cwd=tmp_path, env=env, args=("--workers", "1")) as server:
        info = httpx.get(f"{server.url}/model/info").json()
        assert (info["version"], info["registry_version"]) == (versions[0][0]["version"], "1")
        served = httpx.post(f"{server.url}/predict_batch", json=body).json()
        assert served["model_version"] == versions[0][0]["version"]
        client.set_registered_model_alias(MODEL, "champion", "2")
        server.wait_for(lambda h: h["model_version"] == versions[1][0]["version"], timeout=60)
        served = httpx.post(f"{server.url}/predict_batch", json=body).json()
        assert served["model_version"] == versions[1][0]["version"]


# --- The prediction log -----------------------------------------------------------------------


def _trips(start: int, n: int) -> list[dict[str, Any]]:
    # Each trip's distance is its number: a row lost or written twice shows in the export.
    return [
        {
            "pu_location_id": 74,
            "do_location_id": 168,
            "trip_distance": round(0.01 * (start + i + 1), 2),
            "pickup_hour": 8.5,
            "pickup_dow": 2,
        }
        for i in range(n)
    ]


def _metric(server: ServerProcess, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not in /metrics")


def _export(url: str, out: Path) -> pd.DataFrame:
    run = subprocess.run(
        [sys.executable, "-m", "serve.export_log", str(out), "--log", url, "--keep-empty"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    return pd.read_parquet(out)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("pg-log")
    small_model_dir(work, seed=3)
    return work


@pytest.fixture(scope="module")
def two_services(pg: PostgresServer, model_dir: Path) -> Iterator[tuple[str, list[ServerProcess]]]:
    url = pg.create_database("predictions")
    env = {
        "AUTOOPS_PREDICTION_LOG_URL": url,
        "AUTOOPS_LOG_FLUSH_INTERVAL_S": "0.2",
        "AUTOOPS_LOG_FLUSH_ROWS": "50",
        "AUTOOPS_COMPILE": "off",
    }
    servers = [ServerProcess(cwd=model_dir, env=env, args=("--workers", "1")) for _ in range(2)]
    try:
        for server in servers:
            server.start()
        yield url, servers
    finally:
        for server in servers:
            server.stop()


def _wait_written(servers: list[ServerProcess], total: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        logs = [httpx.get(f"{s.url}/health").json()["prediction_log"] for s in servers]
        if sum(log["written_rows"] for log in logs) >= total and all(
            log["pending_rows"] == 0 for log in logs
        ):
            return
        assert time.monotonic() < deadline, logs
        time.sleep(0.1)


def test_two_services_share_one_log_nothing_lost_nothing_duplicated(
    two_services: tuple[str, list[ServerProcess]], tmp_path: Path
) -> None:
    url, servers = two_services
    batches, size = 40, 25

    def send(server: ServerProcess, first: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for b in range(batches):
                trips = _trips(first + b * size, size)
                assert client.post("/predict_batch", json={"trips": trips}).status_code == 200

    # Both services at once, each from two client threads: four writers' worth of requests.
    starts = [i * batches * size for i in range(4)]
    threads = [threading.Thread(target=send, args=(servers[i % 2], first)) for i, first in enumerate(starts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = 4 * batches * size
    _wait_written(servers, total)
    health = [httpx.get(f"{s.url}/health").json()["prediction_log"] for s in servers]
    assert all(h["sink"] == "postgresql" and h["up"] and h["dropped_rows"] == 0 for h in health)
    assert all(h["written_rows"] == total // 2 for h in health)

    served = _export(url, tmp_path / "served.parquet")
    assert len(served) == total
    distances = np.sort(served["trip_distance"].round(2).to_numpy())
    np.testing.assert_array_equal(distances, np.round(0.01 * np.arange(1, total + 1), 2))
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT n_rows, last_row FROM requests ORDER BY id").fetchall()
    # The running row count is gapless across both writers: each request ends where the next starts.
    assert [last for _, last in rows] == list(np.cumsum([n for n, _ in rows]))

    # The drift check reads what both services served.
    from core.drift import compute_drift
    from core.params import DriftParams

    reference = features_with_target(random_trips(800, seed=8))
    reference["prediction"] = np.linspace(5, 30, len(reference))
    current = served[[c for c in served.columns if c != "vendor_id" and not served[c].isna().all()]]
    summary, _ = compute_drift(reference, current, DriftParams(sample_rows=5000))
    assert summary["n_columns"] == len([c for c in current.columns if c in (*FEATURES, "prediction")])


def test_a_sink_that_goes_away_costs_no_request(
    two_services: tuple[str, list[ServerProcess]], pg: PostgresServer, tmp_path: Path
) -> None:
    url, servers = two_services
    server = servers[0]
    before = len(_export(url, tmp_path / "before.parquet"))
    pg.stop()
    try:
        for b in range(5):
            response = httpx.post(f"{server.url}/predict_batch", json={"trips": _trips(4900 + b * 10, 10)})
            assert response.status_code == 200
        health = server.wait_for(lambda h: not h["prediction_log"]["up"], timeout=30)
        assert health["status"] == "ok" and health["model_loaded"]
        assert health["prediction_log"]["error"] and health["prediction_log"]["pending_rows"] == 50
        assert _metric(server, "autoops_prediction_log_up") == 0
    finally:
        pg.start()
    # Back: what waited is written, once.
    server.wait_for(lambda h: h["prediction_log"]["up"] and h["prediction_log"]["pending_rows"] == 0, 30)
    assert _metric(server, "autoops_prediction_log_up") == 1
    after = _export(url, tmp_path / "after.parquet")
    assert len(after) == before + 50
    assert after["trip_distance"].round(2).between(49.005, 49.505).sum() == 50


def test_export_names_an_unreachable_log_in_one_line(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    run = subprocess.run(
        [sys.executable, "-m", "serve.export_log", str(tmp_path / "x.parquet"), "--log", url],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert (
        run.stderr.startswith("error: prediction log postgresql://127.0.0.1:") and run.stderr.count("\n") == 1
    )
