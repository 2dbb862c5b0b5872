"""The backtest's expensive steps, run in worker processes, and the pool that runs them.

Fitting a model, scoring a model on a month (with Evidently's drift check when a policy needs it)
and the trigger's challenger are module-level functions so they pickle into a worker. A model
travels between processes as a folder: ``fit_model`` writes the model, the holdout the drift check
compares against and the reference figures; the other steps read it. Each worker runs one thread
(OpenMP with more threads than free cores slows HistGradientBoosting down many times over on a
shared machine), so the workers are the parallelism.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.drift import compute_drift
from core.evaluation import PREDICTION, with_predictions
from core.feature_tables import split_holdout
from core.features import FEATURES, TARGET
from core.host import usable_cpus
from core.io import atomic_dir, write_json, write_parquet
from core.metrics import regression_metrics
from core.model import MODEL_FILE, load_model, predict, save_model
from core.params import DriftParams, Params
from core.training import fit
from core.trigger import fit_challenger, gain_record, mae, time_split

# One thread per worker: the workers are the parallelism, and see the module docstring.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# A fitted model's folder: the model (core.model.MODEL_FILE), these two, nothing else.
HOLDOUT_FILE = "holdout.parquet"
REFERENCE_FILE = "reference.json"


def fit_model(params: Params, window: pd.DataFrame, out_dir: str) -> dict[str, Any]:
    """Train exactly as the pipeline does (featurize's holdout split, train's fit) into ``out_dir``."""

    train, holdout = split_holdout(window, params.split.holdout_fraction, params.split.seed)
    model, seconds = fit(params, train)
    holdout = with_predictions(model, holdout)
    reference = {
        "holdout": regression_metrics(holdout[TARGET].to_numpy(), holdout[PREDICTION].to_numpy()),
        "training_rows": len(train),
        "fit_seconds": round(seconds, 3),
    }
    with atomic_dir(out_dir) as tmp:
        save_model(model, tmp / MODEL_FILE)
        # The drift reference: the holdout's features and the model's predictions on them.
        reference_frame = holdout[[*FEATURES, PREDICTION]]
        write_parquet(pa.Table.from_pandas(reference_frame, preserve_index=False), tmp / HOLDOUT_FILE)
        write_json(reference, tmp / REFERENCE_FILE)
    return reference


def score_month(
    model_dir: str, features: pd.DataFrame, drift: DriftParams | None
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The deployed model's predictions on a month and, if asked, Evidently's drift summary."""
    model = load_model(Path(model_dir) / MODEL_FILE)
    predictions = predict(model, features[list(FEATURES)].to_numpy(dtype=np.float64))
    if drift is None:
        return predictions, None
    reference = pq.read_table(Path(model_dir) / HOLDOUT_FILE).to_pandas()
    current = features[list(FEATURES)].copy()
    current[PREDICTION] = predictions
    with warnings.catch_warnings():
        # scipy's chi-square warns on categories one side lacks; Evidently handles them, and a
        # screenful of identical warnings per month would bury the progress bar.
        warnings.simplefilter("ignore", RuntimeWarning)
        summary, _ = compute_drift(reference, current, drift)
    keep = ("data_drift", "drifted_share", "drifted_columns", "n_columns", "drift_share_threshold")
    return predictions, {k: summary[k] for k in (*keep, "prediction_drift")}


def split_gains(
    model_dirs: list[str], frame: pd.DataFrame, params: Params, month: str, facts_file: str
) -> dict[str, dict[str, Any]]:
    """The trigger's estimate at ``month`` for each deployed model: one challenger, fitted once."""
    path = Path(facts_file)
    if path.exists():
        facts = json.loads(path.read_text())
        _, late = time_split(frame, params.drift.late_fraction)
    else:
        _, facts, late = fit_challenger(frame, params, month)
        write_json(facts, path)
    min_gain = params.drift.min_retrain_gain
    return {d: gain_record(facts, mae(load_model(Path(d) / MODEL_FILE), late), min_gain) for d in model_dirs}


class InlineExecutor(Executor):
    """Runs each task at once in this process (jobs=1), one thread, like a worker would."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        from threadpoolctl import threadpool_limits

        future: Future[Any] = Future()
        try:
            with threadpool_limits(1):
                future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # delivered through the future, as a pool would
            future.set_exception(exc)
        return future


@contextmanager
def make_executor(jobs: int) -> Iterator[Executor]:
    if jobs <= 1:
        yield InlineExecutor()
        return
    from joblib.externals.loky import ProcessPoolExecutor

    # loky sets the environment before the worker imports anything, so OpenMP starts single-threaded.
    with ProcessPoolExecutor(max_workers=jobs, env=WORKER_ENV) as pool:
        yield pool


def default_jobs(requested: int) -> int:
    if requested > 0:
        return requested
    # The cores this process may use (a container's CPU set), not the machine's.
    return usable_cpus()
