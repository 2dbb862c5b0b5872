"""Training: fit on the reference window, register the model, write a models folder.

Used by the train stage (stages/train.py), the trigger's challenger, the backtest and the tests: one
sampling rule and one fit, so every model is trained the same way. models/ holds the pickled model
and a JSON model card, so serving and the Docker image need no MLflow server; MLflow gets the same
model (as skops) as a new version of one registered model.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from core import tracking
from core.artifacts.model_card import ModelCard
from core.features import CATEGORICAL_FEATURES, FEATURES, INPUT_COLUMNS, TARGET
from core.io import StageError, file_sha256, iter_row_groups, open_parquet, read_rows, write_json
from core.metrics import regression_metrics
from core.model import CARD_FILE, MODEL_FILE, SKOPS_TRUSTED_TYPES, build_model, predict, save_model
from core.params import Params
from core.paths import FEATURES_DIR, MODELS_DIR, REGISTRY_FILE

# "0" turns registration off. The loop's own `dvc repro`s set it (autoops.gitops.dvc): a model
# `check` rebuilds or a challenger `propose` has not proposed yet must not enter the registry;
# `autoops propose` registers the challenger itself once it is proposed.
REGISTER_ENV = "AUTOOPS_MLFLOW_REGISTER"
log = logging.getLogger(__name__)


def read_features(name: str, folder: Path = FEATURES_DIR) -> pd.DataFrame:
    path = folder / f"{name}.parquet"
    if not path.exists():
        raise StageError(f"{path}: missing; run the featurize stage first (dvc repro featurize)")
    return pd.read_parquet(path)


def sample_positions(n_rows: int, max_rows: int, seed: int) -> np.ndarray | None:
    """Sorted positions of the deterministic training sample, or None when all rows fit.

    The one sampling rule for every fit (train, the drift stage's challenger, the backtest): the same
    row count and seed always give the same rows, so the model's bytes stay reproducible at any size.
    Sorted, so a file can be read once, front to back, taking these rows.
    """
    if n_rows <= max_rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=max_rows, replace=False))


def sample_frame(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    positions = sample_positions(len(frame), max_rows, seed)
    return frame if positions is None else frame.iloc[positions]


def xy(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return frame[list(FEATURES)].to_numpy(dtype=np.float64), frame[TARGET].to_numpy(dtype=np.float64)


def fit(params: Params, train: pd.DataFrame) -> tuple[Any, float]:
    x, y = xy(train)
    model = build_model(params.train)
    started = time.perf_counter()
    # One OpenMP thread: HistGradientBoosting sums gradients with parallel reductions whose order
    # depends on the thread count, so the model's bytes (and dvc.lock) would differ between a
    # 2-core CI runner and an 8-core laptop. It also keeps a 2-3 s fit from collapsing to a minute
    # when other processes compete for the cores (OpenMP barriers wait for descheduled threads).
    with threadpool_limits(limits=1, user_api="openmp"):
        model.fit(x, y)
    return model, time.perf_counter() - started


def read_training_sample(params: Params, folder: Path = FEATURES_DIR) -> tuple[pd.DataFrame, int]:
    """The training rows (at most ``train.max_rows``, a deterministic sample) and how many there are."""
    path = folder / "train.parquet"
    if not path.exists():
        raise StageError(f"{path}: missing; run the featurize stage first (dvc repro featurize)")
    available = open_parquet(path).metadata.num_rows
    positions = sample_positions(available, params.train.max_rows, params.train.seed)
    if positions is None:
        return read_features("train", folder), available
    return read_rows(path, positions, columns=[*FEATURES, TARGET]).to_pandas(), available


def iter_features(name: str, folder: Path = FEATURES_DIR) -> Iterator[pd.DataFrame]:
    """A features file one row group at a time (bounded memory, whatever the month's size)."""
    path = folder / f"{name}.parquet"
    if not path.exists():
        raise StageError(f"{path}: missing; run the featurize stage first (dvc repro featurize)")
    for table in iter_row_groups(path):
        yield table.to_pandas()


def holdout_metrics_of(model: Any, folder: Path = FEATURES_DIR) -> dict:
    truth, predicted = [], []
    for frame in iter_features("holdout", folder):
        x, y = xy(frame)
        truth.append(y.copy())  # a view would keep the batch's whole block of columns alive
        predicted.append(predict(model, x))
    return regression_metrics(np.concatenate(truth), np.concatenate(predicted))


def model_card(params: Params, model_sha: str, train: pd.DataFrame, holdout_metrics: dict) -> ModelCard:
    """Everything serving needs to describe the model; deterministic, so DVC can hash it."""
    model_params = getattr(params.train, params.train.model).model_dump()
    return ModelCard(
        name=params.mlflow.registered_model,
        version=model_sha[:12],
        model_type=params.train.model,
        model_params=model_params,
        model_file=MODEL_FILE,
        model_sha256=model_sha,
        training_months=params.months.training_months,
        reference_month=params.months.reference,
        features=list(FEATURES),
        categorical_features=list(CATEGORICAL_FEATURES),
        input_columns=list(INPUT_COLUMNS),
        target=TARGET,
        training_rows=len(train),
        data_source=params.data.source,
        train_data_sha256=file_sha256(FEATURES_DIR / "train.parquet"),
        holdout_metrics=holdout_metrics,
    )


# What a registered model needs to be loaded and served elsewhere (`mlflow models serve`): the
# scikit-learn estimator stored as skops, scored through pyfunc. Named, not inferred: MLflow's
# inference starts a child Python that loads the model to watch what it imports (9-11 s of every
# registration, measured in the test suite's profile) and also lists whatever the registering
# process happened to import (pytest and rich turned up in the inferred list).
MODEL_REQUIREMENTS = ("mlflow", "numpy", "pandas", "scikit-learn", "scipy", "skops")


def model_requirements() -> list[str]:
    """The model's pip requirements, pinned to the versions that trained it."""
    return [f"{name}=={version(name)}" for name in MODEL_REQUIREMENTS]


def register(
    params: Params,
    model: Any,
    card: ModelCard,
    fit_seconds: float,
    *,
    tags: dict[str, str] | None = None,
    first_is_champion: bool = True,
    challenger: bool = False,
) -> dict:
    """Log the run and register a new model version; returns what identifies it in MLflow.

    ``challenger``: the version is the one a retrain PR proposes (autoops.release.register_challenger)
    and takes the alias. A person's own `dvc repro` moves no alias: `challenger` names a proposal.
    """
    mlflow = tracking.configure()
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    mlflow.set_experiment(params.mlflow.experiment)
    name = params.mlflow.registered_model
    example = np.zeros((2, len(FEATURES)))
    with mlflow.start_run(run_name=f"train-{params.months.reference}") as run:
        mlflow.log_params(
            {"model": params.train.model, "seed": params.train.seed, "max_rows": params.train.max_rows}
        )
        mlflow.log_params(card.model_params)
        months = ",".join(card.training_months)
        mlflow.log_params({"training_months": months, "source": card.data_source})
        mlflow.log_metrics({f"holdout_{k}": v for k, v in card.holdout_metrics.as_dict().items()})
        mlflow.log_metric("fit_seconds", fit_seconds)
        mlflow.log_dict(card.as_dict(), CARD_FILE)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            signature=infer_signature(example, predict(model, example)),
            pip_requirements=model_requirements(),
            registered_model_name=name,
        )
    client = MlflowClient()
    version = str(info.registered_model_version)
    for key, value in (
        ("reference_month", card.reference_month),
        ("model_sha256", card.model_sha256),
        ("train_data_sha256", card.train_data_sha256),
        ("data_source", card.data_source),
        ("training_months", ",".join(card.training_months)),
    ):
        client.set_model_version_tag(name, version, key, value)
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version, key, value)
    if challenger:
        client.set_registered_model_alias(name, tracking.CHALLENGER, version)
    try:
        client.get_model_version_by_alias(name, tracking.CHAMPION)
    except MlflowException:  # no version holds the alias yet
        # The very first model has nothing to beat: it serves until a merge promotes another.
        if first_is_champion:
            client.set_registered_model_alias(name, tracking.CHAMPION, version)
    return {
        "tracking_uri": tracking.tracking_uri(),
        "run_id": run.info.run_id,
        "registered_model": name,
        "version": version,
        "model_uri": f"models:/{name}/{version}",
    }


def train(params: Params, out_dir: Path = MODELS_DIR, *, use_mlflow: bool = True) -> ModelCard:
    train_frame, available = read_training_sample(params)
    model, fit_seconds = fit(params, train_frame)
    holdout_metrics = holdout_metrics_of(model)
    # Each file is written atomically; the card goes last and carries the model's sha256, so a
    # reader can never pair a card with a model it does not describe.
    model_sha = save_model(model, out_dir / MODEL_FILE)
    card = model_card(params, model_sha, train_frame, holdout_metrics)
    if available > len(train_frame):
        # Only when sampled, so a month below train.max_rows keeps the card (and its hash) it had.
        card = card.model_copy(
            update={"training_rows_available": available, "train_max_rows": params.train.max_rows}
        )
    card.write(out_dir / CARD_FILE)
    log.info(
        "%s on %s: %d rows in %.1f s, holdout MAE %.3f",
        params.train.model,
        ",".join(card.training_months),
        len(train_frame),
        fit_seconds,
        holdout_metrics["mae"],
    )
    if use_mlflow and os.environ.get(REGISTER_ENV, "1") != "0":
        registry = register(params, model, card, fit_seconds)
        write_json(registry, out_dir / REGISTRY_FILE)
        log.info("registered %s version %s", registry["registered_model"], registry["version"])
    return card
