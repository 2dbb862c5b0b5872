"""Model construction, persistence and loading, shared by train, evaluate, backtest and serving."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor

from core.features import CATEGORICAL_FEATURES, FEATURES
from core.io import atomic_path, file_sha256
from core.params import TrainParams
from core.paths import CARD_FILE as CARD_FILE  # re-exported: the stages name it here

MODEL_FILE = "model.pkl"

# skops refuses to load types it does not know are safe; these are the ones our models contain.
# (MLflow 3 also saves sklearn models with skops and needs the same list.)
SKOPS_TRUSTED_TYPES = [
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "numpy.dtype",
    # HistGradientBoosting keeps a functools.partial of check_array for input validation.
    "functools.partial",
    "sklearn.utils.validation.check_array",
]


def build_model(params: TrainParams) -> HistGradientBoostingRegressor | RandomForestRegressor:
    if params.model == "hist_gradient_boosting":
        # params.yaml names each hyper-parameter as scikit-learn does, so they pass through as they are.
        return HistGradientBoostingRegressor(
            **params.hist_gradient_boosting.model_dump(),
            categorical_features=[f in CATEGORICAL_FEATURES for f in FEATURES],
            # A fixed number of iterations (no early stopping) keeps results independent of any
            # internal validation split and identical from run to run.
            early_stopping=False,
            random_state=params.seed,
        )
    return RandomForestRegressor(
        **params.random_forest.model_dump(),
        random_state=params.seed,
    )


def save_model(model: Any, path: Path | str) -> str:
    """Pickle ``model`` atomically and return the file's sha256.

    Why pickle and not skops here: skops names its zip entries after Python object ids, so the
    bytes (and DVC's hash) change on every run even for an identical model; pickle of the same
    fitted estimator is byte-identical, which keeps ``dvc.lock`` reproducible. The sha256 goes into
    the model card and :func:`load_model` checks it, so only the artifact this pipeline wrote is
    ever unpickled. MLflow gets its own skops copy (safe to load from a shared registry).
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            pickle.dump(model, handle, protocol=5)
        digest = file_sha256(tmp)
    return digest


def load_model(path: Path | str, sha256: str | None = None) -> Any:
    """Load a model written by :func:`save_model`, refusing it if ``sha256`` does not match."""
    path = Path(path)
    if sha256 is not None and (actual := file_sha256(path)) != sha256:
        raise ValueError(f"{path}: sha256 {actual[:12]} does not match the model card ({sha256[:12]})")
    with open(path, "rb") as handle:
        return pickle.load(handle)


def predict(model: Any, features: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(features), dtype=np.float64)
