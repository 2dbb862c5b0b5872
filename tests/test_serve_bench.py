"""bench/serve_bench.py's ceiling and its worker accounting: the empty FastAPI endpoint is a server
of the run like the others, each run records the CPU of every server process, a run whose
connections all went to one worker is caught, and the README block says both."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from serve.request_models import SEED_TRIP

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # The bench scripts run as `python -m bench.X` from the root; import them the same way.
    monkeypatch.syspath_prepend(os.fspath(ROOT))
    return importlib.import_module("bench.serve_bench")


def test_the_empty_endpoint_is_served_like_the_service(bench: ModuleType, tmp_path: Path) -> None:
    """The real ceiling server (uvicorn, 2 workers) answers the service's trips, and a keep-alive
    client's requests, all on one connection and so on one worker, are flagged as such."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "registry.json").write_text(json.dumps({"model_uri": "models:/m/1"}))
    pool = bench.servers(tmp_path, 2, tmp_path / "cache")
    assert [(s.name, s.workers, s.trips) for s in pool] == [
        ("ours", 2, True),
        ("mlflow", 1, False),
        ("mlflow-matched", 2, False),
        ("empty", 2, True),
    ]
    empty = pool[-1]
    body = json.dumps(SEED_TRIP)
    with bench.running(empty):
        empty.start(tmp_path, body, timeout=60)
        _settle(bench, empty)  # the first answer can come while the other worker still starts
        before, started = bench.cpu_seconds(empty), time.perf_counter()
        assert len(before) >= 3  # uvicorn's supervisor and its two workers
        with httpx.Client(base_url=empty.url) as client:
            while time.perf_counter() - started < 1.0:
                reply = client.post("/predict", content=body, headers=bench.JSON)
                assert reply.status_code == 200
            assert client.post("/predict", content=b"{", headers=bench.JSON).status_code != 200  # parsed
        cores = bench.worker_cpu(before, bench.cpu_seconds(empty), time.perf_counter() - started)
        if shutil.which("wrk"):  # as a run measures it (wrk is the benchmark's client, not CI's)
            run = bench.measured(empty, bench.lua_script("/predict", [body], tmp_path), 4, 1)
            assert run.rps > 0 and run.errors == 0 and run.worker_cpu
    assert cores and cores[0] > 0.05
    assert bench.one_worker(empty, 8, cores)  # one connection: one worker did it all
    assert not bench.one_worker(empty, 1, cores)  # ... as it must with a single connection


def _settle(bench: ModuleType, server: Any, timeout: float = 60) -> None:
    """Wait until no process of ``server`` uses CPU (all its workers have started)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        before = bench.cpu_seconds(server)
        time.sleep(0.5)
        if not bench.worker_cpu(before, bench.cpu_seconds(server), 0.5):
            return
    raise TimeoutError(f"{server.name} still busy after {timeout} s")


def test_one_worker_is_flagged_only_where_workers_should_share(bench: ModuleType) -> None:
    server = bench.Server("s", ["true"], {}, "/predict", workers=2)
    single = bench.Server("m", ["true"], {}, "/invocations", workers=1, trips=False)
    assert bench.one_worker(server, 8, [0.97, 0.03])
    assert not bench.one_worker(server, 8, [0.96, 0.91])
    assert not bench.one_worker(single, 8, [0.97])  # one worker: nothing to share
    assert bench.worker_cpu({1: 1.0, 2: 5.0, 3: 0.0}, {1: 3.0, 2: 5.001, 4: 9.0}, 2.0) == [1.0]


def _results(bench: ModuleType, tmp_path: Path) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for name, rps, cpu in (
        ("ours", 2000.0, [0.9, 0.8]),
        ("mlflow", 100.0, [1.0]),
        ("empty", 4000.0, [0.95, 0.9]),
    ):
        for kind, connections in (("single", 1), ("single", 8), ("single", 32), ("batch", 4)):
            for flagged in (False, name == "ours" and connections == 8):
                runs.setdefault(f"{name} {kind} c={connections}", []).append(
                    {
                        "rps": rps,
                        "p50_ms": 1.0,
                        "p99_ms": 2.0,
                        "errors": 0,
                        "worker_cpu": [0.6] if flagged else cpu,
                        "one_worker": flagged,
                        "reruns": 2 if flagged else 0,
                    }
                )
    results = {
        "model": {"model_type": "hgb", "version": "abc"},
        "trees": 3,
        "workers": 2,
        "cpus": 2,
        "load_average_start": 0.5,
        "duration_s": 8,
        "rounds": 2,
        "micro_ms": {},
        "cold_start_s": {"ours": [1.0], "mlflow": [5.0], "empty": [0.5]},
        "runs": runs,
    }
    bench.save(results, tmp_path / "serve.json")
    return json.loads((tmp_path / "serve.json").read_text())


def test_the_block_gives_the_ceiling_and_each_workers_cpu(bench: ModuleType, tmp_path: Path) -> None:
    from bench.serve_report import summary

    block = summary(_results(bench, tmp_path))
    assert "empty FastAPI endpoint (the ceiling)" in block
    assert "single trips at concurrency 1 50%; single trips at concurrency 8 50%" in block
    # By rank over the rounds: (0.9, 0.6) and (0.8, none); the round still on one worker is flagged.
    assert "| single c=8 | 0.75 + 0.40⚑ | 1.00 | 0.95 + 0.90 |" in block
    assert "| single c=1 | 0.90 + 0.80 | 1.00 | 0.95 + 0.90 |" in block
    assert "one worker: 1 of 24; still on one worker after the reruns: 1." in block


def test_the_request_cost_block_is_what_its_results_render(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/README.md's columnar-path table comes from bench/results/serve_request_cost.json, by
    bench/serve_request_cost.py's renderer: no figure typed by hand."""
    monkeypatch.syspath_prepend(os.fspath(ROOT))
    cost = importlib.import_module("bench.serve_request_cost")
    results = json.loads(cost.RESULTS.read_text())
    assert any(run.get("batch_paths") for run in results.values())
    assert cost.render() == (ROOT / "bench" / "README.md").read_text(), (
        "run `python -m bench.serve_request_cost --render`"
    )
