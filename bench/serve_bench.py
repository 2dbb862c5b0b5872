"""Serving benchmark: this service (``python -m serve``) against MLflow's ``mlflow models serve``
and against the ceiling, an empty FastAPI endpoint (bench/empty_endpoint.py).

The same registered model, the same real trips, the same worker count and one OpenMP thread per
worker for both, loopback only, one load generator (wrk), both servers measured in the same run
with the order alternated every round. Reports requests/s and p50/p99 latency for single trips at
concurrency 1, 8 and 32, rows/s for 1000-trip batches, cold start (process launch to the first
successful prediction), and where the time goes inside one request (in-process timings). Each
measurement records the CPU each server process used, and is measured again when a multi-worker
server got all of wrk's connections on one worker (flagged if it still did after the reruns).

Needs a trained pipeline directory (models/, mlflow.db with the registered model) - see
bench/README.md, "Serving" - and wrk (apt-get install wrk)::

    python bench/serve_bench.py --workdir /tmp/serve-work \
        --trips ../shared/data/tlc/green_tripdata_2021-02.parquet

Size (~700 lines): one run, read top to bottom in the order it measures (request bodies, the
servers, wrk, in-process timings, the hot swap, main), all sharing the servers and bodies. What
stands on its own is elsewhere: the profile's steps (bench/serve_profile.py) and the README block
rendered from the results (bench/serve_report.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil
from threadpoolctl import threadpool_limits

if not __package__:  # run as a file (python bench/serve_bench.py): its siblings are bench.*
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serve_profile import profile_server
from bench.serve_report import (
    BATCH_CONCURRENCY,
    BATCH_ROWS,
    CONCURRENCY,
    ONE_WORKER_RERUNS,
    SWAP_AT_S,
    check_readme,
    earlier_runs,
    loaded_run,
    summary,
    update_readme,
)
from core.artifacts.model_card import ModelCard
from core.features import feature_matrix, filter_mask
from core.model import MODEL_FILE, load_model
from core.params import FilterParams, load_params
from core.paths import CARD_FILE, MODEL_CARD, MODELS_DIR
from core.training import train
from serve.batch_columns import ColumnarDecoder
from serve.compile import publish_compiled
from serve.model_store import DirSource
from serve.predictor import SklearnPredictor, compile_model
from serve.request_models import BatchRequest, Trip
from serve.testing import ROOT, free_port
from serve.trip_columns import trip_columns

SINGLE_BODIES = 256


# --- request bodies from real trips -------------------------------------------------------------------


def real_trips(path: Path, n: int, seed: int = 0) -> pd.DataFrame:
    trips = pd.read_parquet(path)
    start = trips["lpep_pickup_datetime"].median().to_period("M").start_time
    kept = trips[filter_mask(trips, start, start + pd.offsets.MonthBegin(), FilterParams())]
    return kept.sample(n=n, random_state=seed).reset_index(drop=True)


def api_trip(row: Any) -> dict[str, Any]:
    trip: dict[str, Any] = {
        "pu_location_id": int(row.PULocationID),
        "do_location_id": int(row.DOLocationID),
        "trip_distance": float(row.trip_distance),
        "pickup_datetime": pd.Timestamp(row.lpep_pickup_datetime).isoformat(),
    }
    allowed = {"vendor_id": (1, 2, 6), "ratecode_id": (1, 2, 3, 4, 5, 6, 99), "trip_type": (1, 2)}
    for field_name, column in (
        ("vendor_id", "VendorID"),
        ("ratecode_id", "RatecodeID"),
        ("trip_type", "trip_type"),
        ("passenger_count", "passenger_count"),
    ):
        value = getattr(row, column)
        if pd.isna(value) or (field_name in allowed and int(value) not in allowed[field_name]):
            continue
        if field_name == "passenger_count" and not 0 <= value <= 9:
            continue
        trip[field_name] = int(value)
    return trip


@dataclass
class Bodies:
    """The same trips for both servers: ours takes the trip, MLflow the model's feature vector
    (computed by the very code the service runs, so both models see identical inputs)."""

    ours_single: list[str]
    mlflow_single: list[str]
    ours_batch: str
    mlflow_batch: str
    trips: list[dict[str, Any]]
    features: np.ndarray


def make_bodies(trips: pd.DataFrame) -> Bodies:
    api = [api_trip(row) for row in trips.itertuples(index=False)]
    features = feature_matrix(trip_columns([Trip.model_validate(t) for t in api]))
    # MLflow's JSON is parsed by Python's json module, which reads NaN (an unknown optional field).
    rows = features.tolist()
    return Bodies(
        ours_single=[json.dumps(t) for t in api[:SINGLE_BODIES]],
        mlflow_single=[json.dumps({"inputs": [r]}) for r in rows[:SINGLE_BODIES]],
        ours_batch=json.dumps({"trips": api[:BATCH_ROWS]}),
        mlflow_batch=json.dumps({"inputs": rows[:BATCH_ROWS]}),
        trips=api,
        features=features,
    )


# --- servers -------------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    path: str  # the prediction endpoint
    workers: int = 1  # worker processes meant to share the connections
    trips: bool = True  # takes the API's trips (ours, the empty endpoint); False: MLflow's features
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_dir: Path, probe_body: str, timeout: float = 180) -> float:
        """Launch; returns seconds to the first successful prediction (cold start)."""
        self.port = free_port()
        self.log = log_dir / f"{self.name}-{self.port}.log"
        command = [c.replace("{port}", str(self.port)) for c in self.command]
        started = time.perf_counter()
        with open(self.log, "wb") as log:  # the child keeps its own copy of the handle
            self.proc = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = started + timeout
        with httpx.Client(timeout=5) as client:
            while time.perf_counter() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    reply = client.post(self.url + self.path, content=probe_body, headers=JSON)
                    if reply.status_code == 200:
                        return time.perf_counter() - started
                time.sleep(0.01)
        raise TimeoutError(f"{self.name} did not answer within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self.proc = None


JSON = {"Content-Type": "application/json"}


def servers(workdir: Path, workers: int, cache: Path) -> list[Server]:
    """Ours; MLflow as shipped (1 worker, OpenMP's default threads); MLflow with our settings
    (the same workers, one OpenMP thread each) - the strongest MLflow this machine can run; and the
    ceiling, an empty FastAPI endpoint on uvicorn with the same workers (bench/empty_endpoint.py)."""
    registry = json.loads((workdir / "models" / "registry.json").read_text())
    base = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
        "PYTHONPATH": str(ROOT),
    }
    base.pop("OMP_NUM_THREADS", None)
    ours = Server(
        "ours",
        [sys.executable, "-m", "serve", "--host", "127.0.0.1", "--port", "{port}", "--workers", str(workers)],
        {
            **base,
            "AUTOOPS_MODELS_DIR": str(workdir / "models"),
            "AUTOOPS_COMPILED_CACHE": str(cache),
            "AUTOOPS_PREDICTION_LOG": str(workdir / "bench-predictions.sqlite"),
            "AUTOOPS_MAX_BATCH": str(BATCH_ROWS),
        },
        "/predict",
        workers,
    )
    mlflow = [sys.executable, "-m", "mlflow", "models", "serve", "-m", registry["model_uri"]]
    mlflow += ["--env-manager", "local", "-h", "127.0.0.1", "-p", "{port}"]
    shipped = Server("mlflow", mlflow, base, "/invocations", trips=False)
    matched = Server(
        "mlflow-matched",
        [*mlflow, "--workers", str(workers)],
        {**base, "OMP_NUM_THREADS": "1"},
        "/invocations",
        workers,
        trips=False,
    )
    empty = [sys.executable, "-m", "uvicorn", "bench.empty_endpoint:app", "--host", "127.0.0.1"]
    empty += ["--port", "{port}", "--workers", str(workers), "--http", "httptools", "--no-access-log"]
    return [ours, shipped, matched, Server("empty", empty, base, "/predict", workers)]


# --- wrk ---------------------------------------------------------------------------------------------


def lua_script(path: str, bodies: list[str], directory: Path) -> Path:
    """A wrk script cycling through ``bodies`` (each wrk thread starts at its own offset)."""
    quoted = ",\n".join(f"[==[{b}]==]" for b in bodies)
    script = directory / f"wrk-{abs(hash((path, len(bodies), bodies[0])))}.lua"
    script.write_text(
        f"local bodies = {{\n{quoted}\n}}\n"
        "local i = math.random(#bodies)\n"
        'local headers = {["Content-Type"] = "application/json"}\n'
        "request = function()\n"
        "  i = i % #bodies + 1\n"
        f'  return wrk.format("POST", "{path}", headers, bodies[i])\n'
        "end\n"
    )
    return script


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise WrkOutputError(f"not a wrk latency: {text!r}")
    return float(match[1]) * (60e3 if match[2] == "m" else _UNITS[match[2]])


class WrkOutputError(ValueError):
    """wrk printed something this parser does not understand (the output is in the message)."""


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    # CPU cores each of the server's processes used during the run, busiest first (see worker_cpu).
    worker_cpu: list[float] = field(default_factory=list)
    one_worker: bool = False  # all connections went to one of several workers (see one_worker)
    reruns: int = 0  # how often it was measured again for that


def wrk(url: str, script: Path, connections: int, seconds: float) -> Run:
    threads = min(connections, 2)
    seconds = max(1, round(seconds))  # wrk takes whole seconds
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> Run:
    """Requests/s, p50, p99 and errors from ``wrk --latency`` output.

    wrk pads its columns: a latency can come with trailing blanks ("1.00s "), which a stricter
    parse once turned into a KeyError after minutes of measurement.
    """
    latency = dict(
        re.findall(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+\s*(?:us|ms|s|m))\s*$", out, flags=re.MULTILINE)
    )
    rate = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if rate is None or set(latency) != {"50", "99"}:
        raise WrkOutputError(f"no requests/s or p50/p99 latency in wrk's output:\n{out}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    errors += int(m[1]) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    return Run(float(rate[1]), _ms(latency["50"]), _ms(latency["99"]), errors)


# --- how the connections spread over the workers ----------------------------------------------------

# A process below this many cores during a run is idle (uvicorn's supervisor, a resource tracker).
IDLE_CORES = 0.02
# One process doing this share of the server's CPU while others should share it: one worker had
# every connection (wrk keeps its connections, so a run's rate can halve by luck, for any server).
ONE_WORKER_SHARE = 0.9


def cpu_seconds(server: Server) -> dict[int, float]:
    """CPU seconds so far of the server's process and all its descendants (its workers), by pid."""
    assert server.proc is not None
    root = psutil.Process(server.proc.pid)
    seconds = {}
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            seconds[proc.pid] = times.user + times.system
    return seconds


def worker_cpu(before: dict[int, float], after: dict[int, float], elapsed: float) -> list[float]:
    """Cores each busy process used between two :func:`cpu_seconds` snapshots, busiest first."""
    cores = [(after[pid] - before[pid]) / elapsed for pid in after.keys() & before.keys()]
    return sorted((round(c, 3) for c in cores if c >= IDLE_CORES), reverse=True)


def one_worker(server: Server, connections: int, cores: list[float]) -> bool:
    """Did one process do (nearly) all of a multi-worker server's work with several connections?"""
    if server.workers < 2 or connections < 2 or not cores:
        return False
    return cores[0] >= ONE_WORKER_SHARE * sum(cores)


def measured(server: Server, script: Path, connections: int, seconds: float) -> Run:
    """wrk against ``server`` with each process's CPU share recorded; a run whose connections
    all landed on one worker is measured again (flagged if it still is after the reruns)."""
    for attempt in range(ONE_WORKER_RERUNS + 1):
        before, started = cpu_seconds(server), time.perf_counter()
        run = wrk(server.url, script, connections, seconds)
        run.worker_cpu = worker_cpu(before, cpu_seconds(server), time.perf_counter() - started)
        run.one_worker = one_worker(server, connections, run.worker_cpu)
        run.reruns = attempt
        if not run.one_worker:
            return run
        print(f"{server.name} c={connections}: all connections on one worker {run.worker_cpu}, again")
    return run


# --- where the time goes (in-process) ------------------------------------------------------------------


def timed(fn: Any, repeat: int, batches: int = 5) -> float:
    """Milliseconds per call: the best of a few batches, since other load on the machine only adds."""
    fn()
    best = float("inf")
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - started) / repeat * 1e3)
    return best


def micro(estimator: Any, compiled: Any, bodies: Bodies) -> dict[str, float]:
    """The steps of a request, in-process (a warm cache: inside a server each costs more)."""
    one_body = bodies.ours_single[0].encode()
    one = [Trip.model_validate_json(one_body)]
    batch_body = bodies.ours_batch.encode()
    trips = BatchRequest.model_validate_json(batch_body).trips
    columnar = ColumnarDecoder(BATCH_ROWS)
    # Timed only if the batch takes it (else /predict_batch validates it with pydantic, timed above).
    takes_columnar = columnar.decode(batch_body, False) is not None
    x1, xk = bodies.features[:1], bodies.features[:BATCH_ROWS]
    sklearn = SklearnPredictor(estimator)
    # One OpenMP thread, as in each worker of either server.
    with threadpool_limits(limits=1):
        return {
            "1 trip: validate JSON body": timed(lambda: Trip.model_validate_json(one_body), 2000),
            "1 trip: features (core.features)": timed(lambda: feature_matrix(trip_columns(one)), 2000),
            "1 trip: predict, sklearn": timed(lambda: sklearn.predict(x1), 200),
            "1 trip: predict, compiled": timed(lambda: compiled.predict(x1), 2000),
            f"{BATCH_ROWS} trips: validate JSON body": timed(
                lambda: BatchRequest.model_validate_json(batch_body), 20
            ),
            # What /predict_batch takes for a body in the common shape (serve/batch_columns.py).
            **(
                {
                    f"{BATCH_ROWS} trips: decode + validate, columnar": timed(
                        lambda: columnar.decode(batch_body, False), 20
                    )
                }
                if takes_columnar
                else {}
            ),
            f"{BATCH_ROWS} trips: features": timed(lambda: feature_matrix(trip_columns(trips)), 20),
            f"{BATCH_ROWS} trips: predict, sklearn": timed(lambda: sklearn.predict(xk), 20),
            f"{BATCH_ROWS} trips: predict, compiled": timed(lambda: compiled.predict(xk), 20),
        }


# --- a hot swap under load ---------------------------------------------------------------------------------


SWAP_LUA = """
local threads = {}
counts = {}  -- a global: done() reads each thread's copy with thread:get
setup = function(thread) table.insert(threads, thread) end
response = function(status, headers, body)
  local version = status == 200 and string.match(body, '"model_version":"(%w+)"') or ("status" .. status)
  local key = os.time() .. " " .. version
  counts[key] = (counts[key] or 0) + 1
end
done = function(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    for key, n in pairs(thread:get("counts")) do merged[key] = (merged[key] or 0) + n end
  end
  for key, n in pairs(merged) do io.write("COUNT ", key, " ", n, "\\n") end
end
"""


def swap_script(base: Path, directory: Path) -> Path:
    script = directory / "wrk-swap.lua"
    script.write_text(base.read_text() + SWAP_LUA)
    return script


def second_version(workdir: Path, seed_offset: int = 1) -> Path:
    """A second model version for the swap: the train stage again with another seed (cached)."""
    out = workdir / "models-bench-v2"
    if (out / CARD_FILE).exists():
        return out

    params = load_params(workdir / "params.yaml")
    params = params.model_copy(
        update={"train": params.train.model_copy(update={"seed": params.train.seed + seed_offset})}
    )
    with contextlib.chdir(workdir):
        train(params, out_dir=out, use_mlflow=False)
    return out


def released(models_dir: Path, cache: Path) -> str:
    """Compile (cached) and publish the library into models_dir, as a release does; its sha256."""

    artifact = DirSource(models_dir).resolve()
    sha = artifact.card.model_sha256
    compiled = compile_model(artifact.load_estimator(), sha, cache)
    if compiled is None:
        sys.exit(f"error: {models_dir} could not be compiled")
    publish_compiled(artifact, compiled)
    return sha


def publish_version(source: Path, live: Path, sha: str) -> None:
    """What a release leaves in a models folder: the library first, then model, then the card."""
    target = live / "compiled" / sha
    if not target.exists():
        tmp = live / "compiled" / f".{sha}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source / "compiled" / sha, tmp)
        os.replace(tmp, target)
    for name in (MODEL_FILE, CARD_FILE):
        shutil.copyfile(source / name, live / f".{name}.tmp")
        os.replace(live / f".{name}.tmp", live / name)


def swap_under_load(
    server: Server, script: Path, publish: Any, connections: int, seconds: int, at: float
) -> dict[str, Any]:
    """wrk for ``seconds``; ``publish()`` after ``at`` s. Responses per second, per version."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script)]
    proc = subprocess.Popen([*command, server.url], stdout=subprocess.PIPE, text=True)
    time.sleep(at)
    published = time.time()
    publish()
    out, _ = proc.communicate(timeout=seconds + 60)
    per_second: dict[int, dict[str, int]] = {}
    for line in out.splitlines():
        if line.startswith("COUNT "):
            _, second, version, n = line.split()
            per_second.setdefault(int(second), {})[version] = int(n)
    seconds_seen = sorted(per_second)[1:-1]  # the first and last seconds are partial
    totals = [sum(per_second[s].values()) for s in seconds_seen]
    versions = [v for v in {v for s in seconds_seen for v in per_second[s]} if not v.startswith("status")]
    if len(versions) != 2:
        raise RuntimeError(f"expected answers from two versions during the swap, got {versions}:\n{out}")
    first_seen = {v: min(s for s in seconds_seen if v in per_second[s]) for v in versions}
    swapped_at = max(first_seen.values())  # the second in which the new version first answered
    before = [t for s, t in zip(seconds_seen, totals, strict=True) if s < int(published)]
    window = [t for s, t in zip(seconds_seen, totals, strict=True) if int(published) <= s <= swapped_at + 5]
    after = [t for s, t in zip(seconds_seen, totals, strict=True) if s > swapped_at + 5]
    baseline = statistics.median(before)
    return {
        "per_second": [per_second[s] for s in seconds_seen],
        "published_after_s": at,
        "swap_delay_s": swapped_at - int(published),
        "rps_before": baseline,
        "rps_worst_second": min(window),
        "rps_after": statistics.median(after) if after else None,
        "worst_second_vs_before": min(window) / baseline,
        "seconds_below_half": sum(t < baseline / 2 for t in window + after),
        "failed": sum(n for s in seconds_seen for v, n in per_second[s].items() if v.startswith("status")),
    }


def wrk_in_background(url: str, script: Path, connections: int, seconds: float) -> subprocess.Popen[bytes]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(script), url]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)


SWAP_SECONDS = 24


def run_swaps(
    workdir: Path, args: argparse.Namespace, bodies: Bodies, log_dir: Path, cache: Path
) -> list[dict[str, Any]]:
    """A released version replacing the served one under single-trip load at concurrency 8, with
    the library the release shipped (never compiled by the service): both ways, once per round."""
    versions = [(workdir / "models", released(workdir / "models", cache))]
    v2 = second_version(workdir)
    versions.append((v2, released(v2, cache)))
    live = workdir / "bench-live"
    shutil.rmtree(live, ignore_errors=True)
    (live / "compiled").mkdir(parents=True)
    swap_cache = workdir / ".cache" / "serve" / "bench-swap"
    shutil.rmtree(swap_cache, ignore_errors=True)
    swap_cache.mkdir(parents=True)
    publish_version(versions[0][0], live, versions[0][1])
    server = servers(workdir, args.workers, swap_cache)[0]
    server.env = {**server.env, "AUTOOPS_MODELS_DIR": str(live), "AUTOOPS_WATCH_INTERVAL_S": "1"}
    script = swap_script(lua_script(server.path, bodies.ours_single, log_dir), log_dir)
    swaps = []
    with running(server):
        server.start(log_dir, bodies.ours_single[0])
        for round_index in range(max(1, args.rounds)):
            source, sha = versions[(round_index + 1) % 2]
            # The service has never seen this version: only the release's library can make it fast.
            shutil.rmtree(swap_cache / sha, ignore_errors=True)
            shutil.rmtree(live / "compiled" / sha, ignore_errors=True)
            swap = swap_under_load(
                server,
                script,
                lambda s=source, h=sha: publish_version(s, live, h),
                8,
                SWAP_SECONDS,
                SWAP_AT_S,
            )
            swap["to_version"] = sha[:12]
            swaps.append(swap)
            print(
                f"swap to {sha[:12]}: {swap['rps_before']:.0f} req/s before, worst second "
                f"{swap['rps_worst_second']:.0f} ({swap['worst_second_vs_before']:.2f}x), after "
                f"{swap['rps_after']}, {swap['seconds_below_half']} s below half, {swap['failed']} failed"
            )
    return swaps


# --- the run -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def running(*items: Server) -> Iterator[None]:
    try:
        yield
    finally:
        for server in items:
            server.stop()


def save(results: dict[str, Any], out: Path) -> None:
    """Write what has been measured so far, atomically: an interrupted run keeps its figures."""
    runs = results.get("runs", {})
    results["median"] = {
        k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p50_ms", "p99_ms", "errors")}
        for k, v in runs.items()
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out)


@contextlib.contextmanager
def busy_processes(n: int) -> Iterator[None]:
    """``n`` CPU-bound processes for the whole run: a loaded machine on demand, the same each time,
    where other people's jobs are a different load in every run."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render:
        write_block(json.loads(args.out.read_text()), args.out, args.readme)
        return
    with busy_processes(args.busy):
        run(args)


def write_block(results: dict[str, Any], out: Path, readme: Path) -> str:
    """Render ``results`` (with the earlier and loaded runs beside ``out``) into ``readme``."""
    block = summary(results, earlier_runs(out), loaded_run(out))
    update_readme(readme, block)
    return block


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="pipeline dir with models/ and mlflow.db (required)")
    parser.add_argument(
        "--trips", type=Path, help="a raw TLC month to draw requests from (default: data/raw)"
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers, for both servers")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2, help="each round measures both, order alternated")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve.json")
    parser.add_argument(
        "--readme", type=Path, default=ROOT / "bench" / "README.md", help="rewrite its serving figures block"
    )
    parser.add_argument("--micro-only", action="store_true", help="only the in-process timings")
    parser.add_argument(
        "--busy", type=int, default=0, help="CPU-bound processes running beside the servers all along"
    )
    parser.add_argument(
        "--render", action="store_true", help="only rewrite --readme's block from --out and its siblings"
    )
    parser.add_argument(
        "--only",
        choices=("single", "batch"),
        help="a targeted run: only this kind of request, only --servers, no swap, no profile, no README "
        "block (e.g. --only single --servers ours,empty: the service against the ceiling)",
    )
    parser.add_argument(
        "--servers", default="ours,mlflow,mlflow-matched,empty", help="with --only: the servers to measure"
    )
    parser.add_argument(
        "--concurrency", help=f"with --only single: connections, comma-separated (default {CONCURRENCY})"
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    if args.workdir is None:
        sys.exit("error: --workdir is required (a pipeline dir with models/ and mlflow.db)")
    if shutil.which("wrk") is None:
        sys.exit("error: wrk not found (apt-get install wrk)")
    if not args.micro_only:  # checked before minutes of measuring, not after
        check_readme(args.readme)
    workdir = args.workdir.resolve()
    card = ModelCard.read(workdir / MODEL_CARD)
    estimator = load_model(workdir / MODELS_DIR / card.model_file, sha256=card.model_sha256)
    cache = workdir / ".cache" / "serve" / "compiled"
    started = time.perf_counter()
    compiled = compile_model(estimator, card.model_sha256, cache)
    if compiled is None:
        sys.exit("error: the model could not be compiled (no gcc?)")
    compile_s = compiled.meta.get("compile_seconds", time.perf_counter() - started)
    trips_path = args.trips or next((workdir / "data" / "raw").glob("*.parquet"))
    bodies = make_bodies(real_trips(trips_path, max(BATCH_ROWS, SINGLE_BODIES)))
    results: dict[str, Any] = {
        "model": card.model_dump(include={"name", "version", "model_type", "training_months"}),
        "trees": compiled.meta["num_tree"],
        "compile_seconds": compile_s,
        "workers": args.workers,
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_start": os.getloadavg()[0],
        "busy_processes": args.busy,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "micro_ms": micro(estimator, compiled, bodies),
        "runs": {},
    }
    print(f"model {card.version}: {compiled.meta['num_tree']} trees, compiled in {compile_s:.0f} s")
    for name, ms in results["micro_ms"].items():
        print(f"  {name:38s} {ms:8.3f} ms")
    save(results, args.out)
    if args.micro_only:
        return

    pool = servers(workdir, args.workers, cache)
    ours = pool[0]
    if args.only:
        wanted = set(args.servers.split(","))
        if unknown := wanted - {server.name for server in pool}:
            names = ", ".join(server.name for server in pool)
            sys.exit(f"error: no server {', '.join(sorted(unknown))} (--servers takes {names})")
        pool = [server for server in pool if server.name in wanted]
    log_dir = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    cold: dict[str, list[float]] = {server.name: [] for server in pool}
    results["cold_start_s"] = cold
    with running(*pool):
        # Cold starts forwards then backwards; the last start of each stays up for the load.
        for server in [*pool, *reversed(pool)]:
            server.stop()
            probe = bodies.ours_single[0] if server.trips else bodies.mlflow_single[0]
            cold[server.name].append(server.start(log_dir, probe))
            print(f"cold start {server.name}: {cold[server.name][-1]:.2f} s")
        shipped = next((server for server in pool if server.name == "mlflow"), None)
        if ours in pool and shipped is not None:
            # Identical inputs must give identical answers: check on the batch before timing.
            ours_pred = httpx.post(
                ours.url + "/predict_batch", content=bodies.ours_batch, headers=JSON, timeout=60
            )
            ml_pred = httpx.post(
                shipped.url + "/invocations", content=bodies.mlflow_batch, headers=JSON, timeout=60
            )
            diff = np.abs(np.array(ours_pred.json()["predictions"]) - np.array(ml_pred.json()["predictions"]))
            results["max_abs_diff_vs_mlflow"] = float(diff.max())
            print(f"max |ours - mlflow| over {BATCH_ROWS} trips: {results['max_abs_diff_vs_mlflow']:.2e} min")
            save(results, args.out)

        scripts = {}
        for server in pool:
            if server.trips:  # the same scripts (paths and bodies) for the service and the ceiling
                scripts[(server.name, "single")] = lua_script(server.path, bodies.ours_single, log_dir)
                scripts[(server.name, "batch")] = lua_script("/predict_batch", [bodies.ours_batch], log_dir)
            else:
                scripts[(server.name, "single")] = lua_script(server.path, bodies.mlflow_single, log_dir)
                scripts[(server.name, "batch")] = lua_script(server.path, [bodies.mlflow_batch], log_dir)
        scenarios = [("single", c) for c in CONCURRENCY] + [("batch", BATCH_CONCURRENCY)]
        if args.only:
            if args.only == "single" and args.concurrency:
                scenarios = [("single", int(c)) for c in args.concurrency.split(",")]
            scenarios = [(kind, c) for kind, c in scenarios if kind == args.only]
            results["only"] = {"kind": args.only, "servers": [server.name for server in pool]}
        for round_index in range(args.rounds):
            # A different server goes first every round, so drifting machine load hits all alike.
            order = pool[round_index % len(pool) :] + pool[: round_index % len(pool)]
            for kind, connections in scenarios:
                for server in order:
                    script = scripts[(server.name, kind)]
                    wrk(server.url, script, connections, args.warmup)
                    run = measured(server, script, connections, args.duration)
                    results["runs"].setdefault(f"{server.name} {kind} c={connections}", []).append(
                        asdict(run)
                    )
                    save(results, args.out)
                    print(
                        f"round {round_index + 1} {server.name:14s} {kind:6s} c={connections:<2d} "
                        f"{run.rps:9.1f} req/s  p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:8.2f} ms  "
                        f"errors {run.errors}  cpu {run.worker_cpu}{'  ONE WORKER' if run.one_worker else ''}"
                    )
        if args.only:
            _print_ratios(results)
            print(f"results: {args.out} (a targeted run: no swap, no profile, no README block)")
            return
        # Where a batch's time goes in the server, under the same load (a separate run: the
        # figures above are unprofiled).
        assert ours.proc is not None
        profiled = wrk_in_background(
            ours.url, scripts[(ours.name, "batch")], BATCH_CONCURRENCY, args.duration
        )
        time.sleep(1)
        results["batch_profile"] = profile_server(ours.proc.pid, args.duration - 2, log_dir / "profile.txt")
        profiled.wait()
        save(results, args.out)
        for step, share in (results["batch_profile"] or {}).items():
            print(f"  batch profile: {share:6.1%}  {step}")

    results["swap"] = run_swaps(workdir, args, bodies, log_dir, cache)
    save(results, args.out)
    print(write_block(results, args.out, args.readme))
    print(f"results: {args.out}; figures: {args.readme}")


def _print_ratios(results: dict[str, Any]) -> None:
    """A targeted run's requests/s as a share of the empty endpoint's, per scenario (medians)."""
    median = results["median"]
    for key, measured_run in median.items():
        name, _, scenario = key.partition(" ")
        ceiling = median.get(f"empty {scenario}")
        if name != "empty" and ceiling:
            print(f"{key}: {measured_run['rps'] / ceiling['rps']:.0%} of the empty endpoint's requests/s")


if __name__ == "__main__":
    main()
