"""The drift verdict: Evidently's per-column tests, the dataset share, and performance drift."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stages.drift import _stable_ids, compute_drift, performance_drift, verdict
from stages.evaluate import PREDICTION
from stages.features import FEATURES
from stages.params import DriftParams


def _frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    data = {name: rng.integers(0, 5, n).astype(float) for name in FEATURES}
    data["trip_distance"] = rng.lognormal(1.0 + shift, 0.5, n)
    data["pickup_hour"] = rng.uniform(0, 24, n)
    data[PREDICTION] = rng.normal(15 + 10 * shift, 5, n)
    return pd.DataFrame(data)


def test_one_shifted_column_is_drift_in_that_column_only() -> None:
    rng = np.random.default_rng(0)
    ref, cur = _frame(rng, 3000), _frame(rng, 3000)
    cur["trip_distance"] *= 2
    result, _ = compute_drift(ref, cur, DriftParams())
    assert result["drifted_columns"] == ["trip_distance"]
    assert result["columns"]["trip_distance"]["method"].startswith("Wasserstein")
    assert result["drifted_share"] == round(1 / 13, 6) and not result["data_drift"]


def test_dataset_drift_when_the_share_reaches_the_threshold() -> None:
    rng = np.random.default_rng(1)
    ref, cur = _frame(rng, 3000), _frame(rng, 3000, shift=1.0)
    result, _ = compute_drift(ref, cur, DriftParams(drift_share=2 / 13))
    assert {"trip_distance", PREDICTION} <= set(result["drifted_columns"])
    assert result["data_drift"] and result["prediction_drift"]


def test_performance_drift_and_verdict_reasons() -> None:
    evaluation = {"reference_holdout": {"mae": 3.0}, "current": {"mae": 3.6}}
    perf = performance_drift(evaluation, threshold=0.1)
    assert perf["performance_drift"] and perf["mae_change"] == 0.2
    data = {
        "data_drift": False,
        "drifted_columns": [],
        "n_columns": 13,
        "drifted_share": 0.0,
        "drift_share_threshold": 0.5,
    }
    retrain, reason = verdict(data, perf)
    assert retrain and reason.startswith("retrain recommended: performance drift: MAE 3.600")
    calm = performance_drift({"reference_holdout": {"mae": 3.0}, "current": {"mae": 3.1}}, threshold=0.1)
    retrain, reason = verdict(data, calm)
    assert not retrain and reason.startswith("no retrain needed")


def test_random_report_ids_are_renumbered_deterministically() -> None:
    html = 'var metric_0123456789abcdef0123456789abcdef = {"id": "01a21a6a-dbfc-77bb-a6e6-7f08a7948eb7"}'
    other = 'var metric_fedcba9876543210fedcba9876543210 = {"id": "01a21a6a-c294-7bdd-a2e8-9fcd6510afc2"}'
    assert _stable_ids(html) == _stable_ids(other)
    assert "0123456789abcdef" not in _stable_ids(html)
