"""Regression metrics in one place, so train, evaluate, drift and backtest agree on definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "mae": round(float(mean_absolute_error(y_true, y_pred)), 6),
        "rmse": round(float(root_mean_squared_error(y_true, y_pred)), 6),
        "r2": round(float(r2_score(y_true, y_pred)), 6),
        "rows": len(y_true),
    }


def mae_by_hour(frame: pd.DataFrame, prediction: str, target: str) -> pd.Series:
    """Mean absolute error per pickup hour (the ``pickup_hour`` feature)."""
    err = (frame[prediction] - frame[target]).abs()
    return err.groupby(frame["pickup_hour"].astype(int)).mean()
