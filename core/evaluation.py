"""Evaluation: accuracy on the reference holdout and on the whole current month.

Labels arrive with the month, so the current month's MAE is the model's live accuracy. The evaluate
stage (stages/evaluate.py) writes what this computes: DVC metrics, the predictions the drift stage
compares, and the data behind the DVC plots declared in dvc.yaml. Files are scored one row group at
a time; only the target, prediction and hour of each row stay in memory, for exact metrics and
plots. A big month is scored with the model's trees compiled to C (core/scoring.py: the same
predictions, bit for bit, checked against scikit-learn on a sample of every batch).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.artifacts.evaluation import EvaluationMetrics
from core.artifacts.model_card import ModelCard
from core.features import TARGET
from core.io import FrameWriter, StageError, open_parquet
from core.metrics import mae_by_hour, regression_metrics
from core.model import CARD_FILE, MODEL_FILE, load_model, predict
from core.params import Params
from core.paths import FEATURES_DIR, MODELS_DIR
from core.scoring import remember_sha256, scorer
from core.training import iter_features, xy

PREDICTION = "prediction"
# Enough points for a readable scatter plot, few enough to keep the committed CSV small.
SCATTER_POINTS = 1000
log = logging.getLogger(__name__)


def load_trained_model(models_dir: Path = MODELS_DIR) -> tuple[object, ModelCard]:
    card = ModelCard.read(models_dir / CARD_FILE)
    model_path = models_dir / MODEL_FILE
    if not model_path.exists():
        raise StageError(f"{model_path}: missing; run `dvc pull` or `dvc repro train`")
    model = load_model(model_path, sha256=card.model_sha256)
    remember_sha256(model, card.model_sha256)
    return model, card


def with_predictions(model: object, frame: pd.DataFrame, *, in_place: bool = False) -> pd.DataFrame:
    """``frame`` with a :data:`PREDICTION` column added last: on a copy, or on ``frame`` itself when
    the caller owns it (a batch just read: copying it cost a sixth of the trees' time in evaluate)."""
    x, _ = xy(frame)
    out = frame if in_place else frame.copy()
    out[PREDICTION] = predict(model, x)
    return out


def error_by_hour(holdout: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """MAE per pickup hour, one column per dataset (the shape DVC's linear template wants)."""
    columns = {}
    for label, frame in (("reference_holdout_mae", holdout), ("current_mae", current)):
        columns[label] = mae_by_hour(frame, PREDICTION, TARGET).round(4)
    table = pd.DataFrame(columns).reindex(range(24))
    table.index.name = "hour"
    return table.reset_index()


class _Scored:
    """What the metrics and plots need of a scored file, kept in memory: 17 bytes a row."""

    def __init__(self) -> None:
        self.truth: list[np.ndarray] = []
        self.predicted: list[np.ndarray] = []
        self.hour: list[np.ndarray] = []

    def add(self, frame: pd.DataFrame) -> None:
        # Copies, not views: a view of one column keeps the batch's whole 2-D block alive (a 20M-row
        # month then held every batch, 3.5 GB).
        self.truth.append(np.array(frame[TARGET], dtype=np.float64))
        self.predicted.append(np.array(frame[PREDICTION], dtype=np.float64))
        self.hour.append(frame["pickup_hour"].to_numpy().astype(np.int8))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                TARGET: np.concatenate(self.truth),
                PREDICTION: np.concatenate(self.predicted),
                "pickup_hour": np.concatenate(self.hour),
            }
        )


def _score(model: object, name: str, dest: Path, stack: contextlib.ExitStack, keep: Any = None) -> _Scored:
    """Predict a features file row group by row group, writing the predictions to ``dest``."""
    scored, writer = _Scored(), FrameWriter(dest, stack)
    for frame in iter_features(name):
        owned = keep is None  # a row selection is a view-like frame pandas warns about setting
        if keep is not None:
            frame = frame[keep(frame)]
        out = with_predictions(model, frame, in_place=owned)
        writer.add(out)
        scored.add(out)
    writer.flush()
    return scored


def _rows(name: str) -> int:
    """Rows of a features file, from its footer (0 when missing: scoring it then says so)."""
    path = FEATURES_DIR / f"{name}.parquet"
    return open_parquet(path).metadata.num_rows if path.exists() else 0


@dataclass(frozen=True)
class Evaluation:
    """What the evaluate stage writes besides the predictions: the metrics and the plots' data."""

    metrics: EvaluationMetrics
    predicted_vs_actual: pd.DataFrame
    error_by_hour: pd.DataFrame


def evaluate(params: Params, predictions_dir: Path) -> Evaluation:
    """Scores the holdout and the current month into ``predictions_dir`` (one parquet each)."""
    trained, card = load_trained_model()
    in_training = params.months.current in params.months.training_months
    rows = _rows("holdout") * (2 if in_training else 1) + (0 if in_training else _rows("current"))
    model = scorer(trained, rows, "evaluate")
    scope = "month"
    with contextlib.ExitStack() as stack:
        holdout_scored = _score(model, "holdout", predictions_dir / "holdout.parquet", stack)
        if in_training:
            # The model trained on most of this month (a retrain branch): only the month's holdout rows
            # are out of sample, so they alone may stand for "current" (in a PR's metrics diff, say).
            month = params.months.current
            current_scored = _score(
                model,
                "holdout",
                predictions_dir / "current.parquet",
                stack,
                keep=lambda f: f["month"] == month,
            )
            scope = "holdout"
        else:
            current_scored = _score(model, "current", predictions_dir / "current.parquet", stack)
    model.log_parity()
    holdout, current = holdout_scored.frame(), current_scored.frame()
    metrics = EvaluationMetrics(
        model_version=card.version,
        reference_month=params.months.reference,
        current_month=params.months.current,
        current_rows=scope,
        reference_holdout=regression_metrics(holdout[TARGET].to_numpy(), holdout[PREDICTION].to_numpy()),
        current=regression_metrics(current[TARGET].to_numpy(), current[PREDICTION].to_numpy()),
    )
    sample = current.sample(n=min(SCATTER_POINTS, len(current)), random_state=np.random.RandomState(0))
    scatter = pd.DataFrame(
        {"actual": sample[TARGET].round(3), "predicted": sample[PREDICTION].round(3)}
    ).sort_values(["actual", "predicted"])
    log.info(
        "MAE holdout %.3f, current %s %.3f",
        metrics.reference_holdout.mae,
        params.months.current,
        metrics.current.mae,
    )
    return Evaluation(metrics, scatter, error_by_hour(holdout, current))
