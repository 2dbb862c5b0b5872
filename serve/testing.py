"""Helpers shared by the serving tests and the benchmark: a small trained model directory built
by the pipeline's own train stage, and the real server started as a subprocess on a free port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa

from core.features import TARGET, duration_minutes, feature_frame
from core.io import write_parquet
from core.months import add_months
from core.params import DataParams, HGBParams, MonthParams, Params, TrainParams
from core.training import train as train_stage

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def random_trips(n: int, seed: int = 0, month: str = "2021-01") -> pd.DataFrame:
    """Raw trips (canonical column names) with a duration that depends on distance, hour and
    borough, so a model has something to learn. For tests only; real data is in ../shared."""
    rng = np.random.default_rng(seed)
    start = np.datetime64(f"{month}-01T00:00", "us")
    pickup = start + rng.integers(0, 28 * 86_400_000_000, n).astype("timedelta64[us]")
    distance = np.round(rng.lognormal(0.7, 0.8, n).clip(0.1, 60), 2)
    hour = (pickup - pickup.astype("datetime64[D]")).astype(np.int64) / 3.6e9
    rush = 1.0 + 0.4 * np.exp(-(((hour - 17.5) / 2.0) ** 2))
    pu = rng.integers(1, 266, n)
    minutes = (3.0 + 3.2 * distance * rush * (1 + (pu % 7) / 20) + rng.normal(0, 1.5, n)).clip(1.2, 59)
    return pd.DataFrame(
        {
            "VendorID": rng.choice([1, 2], n, p=[0.1, 0.9]),
            "lpep_pickup_datetime": pickup,
            "lpep_dropoff_datetime": pickup + (minutes * 60e6).astype("timedelta64[us]"),
            "RatecodeID": rng.choice([1.0, 5.0, np.nan], n, p=[0.6, 0.05, 0.35]),
            "PULocationID": pu,
            "DOLocationID": rng.integers(1, 266, n),
            "passenger_count": rng.choice([1.0, 2.0, np.nan], n, p=[0.55, 0.1, 0.35]),
            "trip_distance": distance,
            "trip_type": rng.choice([1.0, 2.0, np.nan], n, p=[0.6, 0.05, 0.35]),
        }
    )


def features_with_target(trips: pd.DataFrame) -> pd.DataFrame:
    """What the featurize stage writes for these trips: FEATURES + duration_min."""

    frame = feature_frame(trips)
    frame[TARGET] = duration_minutes(trips).to_numpy()
    return frame


def train_model_dir(
    workdir: Path,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    *,
    max_iter: int = 20,
    seed: int = 42,
    reference: str = "2021-01",
    use_mlflow: bool = False,
) -> Path:
    """Train with the pipeline's train stage in ``workdir``; returns workdir/models.

    ``train``/``holdout`` are feature frames (see :func:`features_with_target`). The stage reads
    and hashes data/features/*.parquet relative to the working directory, hence the chdir; with
    ``use_mlflow`` it also registers the model (MLFLOW_TRACKING_URI, default workdir/mlflow.db).
    """

    features_dir = workdir / "data" / "features"
    for name, frame in (("train", train), ("holdout", holdout)):
        write_parquet(pa.Table.from_pandas(frame, preserve_index=False), features_dir / f"{name}.parquet")
    params = Params(
        data=DataParams(source="synthetic"),
        months=MonthParams(reference=reference, current=add_months(reference, 1)),
        train=TrainParams(seed=seed, hist_gradient_boosting=HGBParams(max_iter=max_iter)),
    )
    with contextlib.chdir(workdir):
        train_stage(params, out_dir=workdir / "models", use_mlflow=use_mlflow)
    return workdir / "models"


def small_model_dir(workdir: Path, seed: int) -> Path:
    """A quick model for a test's server: 2000 random trips (``seed``), 1600 to train 10 iterations
    on, 400 held out; returns workdir/models (see :func:`train_model_dir`)."""
    frame = features_with_target(random_trips(2000, seed=seed))
    return train_model_dir(workdir, frame.iloc[:1600], frame.iloc[1600:], max_iter=10)


def sklearn_server_env(models: Path, **extra: str) -> dict[str, str]:
    """A server of ``models`` answering with scikit-learn (compiling would only cost time; it
    answers the same) and never reloading; ``extra`` adds or overrides variables."""
    return {
        "AUTOOPS_MODELS_DIR": str(models),
        "AUTOOPS_COMPILE": "off",
        "AUTOOPS_WATCH_INTERVAL_S": "0",
        **extra,
    }


class ServerProcess:
    """``python -m serve`` (or ``command``, e.g. ``autoops serve``) in its own process group, on a free
    port of 127.0.0.1."""

    def __init__(
        self,
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        args: tuple[str, ...] = (),
        port: int | None = None,
        log_path: Path | None = None,
        command: tuple[str, ...] = (sys.executable, "-m", "serve"),
    ) -> None:
        self.cwd = cwd
        self.command = command
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.log_path = log_path or cwd / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.started_at = 0.0

    def start(self, *, ready: bool = True, timeout: float = 120.0) -> ServerProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.started_at = time.perf_counter()
        command = [*self.command, "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(
            command,
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self.wait_for(lambda health: health["model_loaded"] or not ready, timeout)
        except BaseException:
            self.stop()  # a server that never became ready must not outlive the test
            raise
        return self

    def wait_for(self, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
        """Poll /health until ``predicate(health_json)`` holds."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                last = httpx.get(f"{self.url}/health", timeout=2).json()
                if predicate(last):
                    return last
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout} s (last /health: {last}):\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # The whole group: uvicorn's supervisor and its workers.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
