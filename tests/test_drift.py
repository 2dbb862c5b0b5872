"""The drift verdict: Evidently's per-column tests, the dataset share, and performance drift."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.drift import compute_drift, performance_drift
from core.drift import stable_ids as _stable_ids
from core.evaluation import PREDICTION
from core.features import FEATURES
from core.params import DriftParams
from core.trigger import decide


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


def test_performance_drift_is_reported() -> None:
    evaluation = {"reference_holdout": {"mae": 3.0}, "current": {"mae": 3.6}}
    perf = performance_drift(evaluation, threshold=0.1)
    assert perf["performance_drift"] and perf["mae_change"] == 0.2


def _gain(value: float) -> dict:
    return {
        "month": "2024-03", "expected_gain": value, "challenger_late_mae": 3.0 * (1 - value),
        "champion_late_mae": 3.0, "early_rows": 30000, "late_rows": 10000, "cut": "2024-03-24 09:10",
        "min_retrain_gain": 0.04,
    }  # fmt: skip


def test_one_decision_with_one_reason() -> None:
    calm = {"data_drift": False, "drifted_columns": [], "n_columns": 13, "drifted_share": 0.0,
            "drift_share_threshold": 0.5}  # fmt: skip
    retrain, reason = decide(calm, _gain(0.052), 0.04)
    assert retrain and reason.startswith("retrain recommended: a retrain should lower next month's MAE")
    assert "by about 5.2%" in reason
    assert "before 2024-03-24 09:10" in reason and ">= 4%" in reason
    retrain, reason = decide(calm, _gain(0.01), 0.04)
    assert not retrain and reason.startswith("no retrain needed: no data drift: 0 of 13 columns drifted")
    assert "about 1.0%" in reason and "< 4%" in reason
    assert "should not lower next month's MAE (about 2.0% worse)" in decide(calm, _gain(-0.02), 0.04)[1]
    drifted = {**calm, "data_drift": True, "drifted_columns": ["pu_zone"], "drifted_share": 0.6}
    retrain, reason = decide(drifted, _gain(-0.02), 0.04)
    assert retrain and reason.startswith("retrain recommended: data drift: 1 of 13 columns drifted")
    # The data_drift policy: Evidently alone, same wording.
    assert decide(drifted, None, 0.04) == (True, "retrain recommended: data drift: 1 of 13 columns drifted "
                                                  "(share 0.60 >= 0.5: pu_zone)")  # fmt: skip


def test_random_report_ids_are_renumbered_deterministically() -> None:
    html = 'var metric_0123456789abcdef0123456789abcdef = {"id": "01a21a6a-dbfc-77bb-a6e6-7f08a7948eb7"}'
    other = 'var metric_fedcba9876543210fedcba9876543210 = {"id": "01a21a6a-c294-7bdd-a2e8-9fcd6510afc2"}'
    assert _stable_ids(html) == _stable_ids(other)
    assert "0123456789abcdef" not in _stable_ids(html)
