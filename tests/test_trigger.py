"""The retrain trigger: a time-ordered split of the month, and an estimate that sees a change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from autoops.backtest import load_with_overrides
from autoops.backtest_data import build_month
from core.feature_tables import split_holdout
from core.features import PICKUP_TIME
from core.io import StageError
from core.training import fit
from core.trigger import estimate_gain, time_split

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["synthetic.rows_per_month=4000", "train.hist_gradient_boosting.max_iter=30", "data.source=synthetic"]


def test_the_split_is_in_time_not_at_random() -> None:
    times = pd.date_range("2024-03-01", "2024-03-31 23:00", periods=1000).to_numpy()
    frame = pd.DataFrame({PICKUP_TIME: np.random.default_rng(0).permutation(times), "x": range(1000)})
    early, late = time_split(frame, 0.25)
    assert len(late) == 250 and len(early) == 750
    assert early[PICKUP_TIME].max() < late[PICKUP_TIME].min()
    with pytest.raises(StageError, match="no pickup_time column"):
        time_split(frame.drop(columns=PICKUP_TIME), 0.25)


def test_the_estimate_sees_a_regime_change_and_not_a_calm_month() -> None:
    params = load_with_overrides(ROOT / "params.yaml", SMALL)
    before, calm, shifted = (build_month(m, params) for m in ("2024-03", "2024-04", "2024-05"))
    train, _ = split_holdout(before, params.split.holdout_fraction, params.split.seed)
    with threadpool_limits(1):
        champion, _ = fit(params, train)
        quiet = estimate_gain(champion, calm, params, "2024-04")
        loud = estimate_gain(champion, shifted, params, "2024-05")
    # After the synthetic shift (trips 1/0.7 as long) a model of the new month's first weeks wins big.
    assert loud["expected_gain"] > 0.2 > quiet["expected_gain"]
    assert loud["late_rows"] + loud["early_rows"] == len(shifted)
    assert loud["cut"].startswith("2024-05-")
    # The gain's paired bootstrap interval, over exactly the late trips both models predicted.
    for estimate in (quiet, loud):
        ci = estimate["expected_gain_ci95"]
        assert ci["low"] <= estimate["expected_gain"] <= ci["high"] and ci["trips"] == estimate["late_rows"]
    assert loud["expected_gain_ci95"]["low"] > 0.2 > quiet["expected_gain_ci95"]["high"]
    with pytest.raises(StageError, match="too few to estimate"):
        estimate_gain(champion, calm.head(300), params, "2024-04")
