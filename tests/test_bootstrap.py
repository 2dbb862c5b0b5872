"""The paired bootstrap interval (core/bootstrap.py), the trigger's sentence with it, and who loses
(autoops/segments.py): the evidence a reviewer weighs in the retrain PR."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autoops.segments import HOUR_BANDS, who_loses
from core.bootstrap import paired_change_interval, percent_with_interval
from core.features import TARGET, borough_names
from core.trigger import gain_sentence, with_interval


def _errors(n: int, seed: int = 0, change: float = -0.05) -> tuple[np.ndarray, np.ndarray]:
    """Two models' absolute errors on the same trips: mostly the trip's difficulty, shared."""
    rng = np.random.default_rng(seed)
    difficulty = rng.gamma(2.0, 2.0, n)
    champion = difficulty * rng.uniform(0.8, 1.2, n)
    return champion * (1 + change) * rng.uniform(0.9, 1.1, n), champion


def test_the_interval_covers_the_estimate_and_narrows_with_more_trips() -> None:
    widths = []
    for n in (800, 13_000):
        challenger, champion = _errors(n)
        point = challenger.mean() / champion.mean() - 1
        interval = paired_change_interval(challenger, champion)
        assert interval is not None and interval["trips"] == n and interval["units"] == n
        assert interval["low"] < point < interval["high"]
        widths.append(interval["high"] - interval["low"])
    # Width falls like 1/sqrt(trips): 16x the trips, about a quarter of the width.
    assert 0.15 < widths[1] / widths[0] < 0.4


def test_the_interval_is_reproducible_and_seeded() -> None:
    challenger, champion = _errors(5000)
    assert paired_change_interval(challenger, champion) == paired_change_interval(challenger, champion)
    assert paired_change_interval(challenger, champion, seed=1) != paired_change_interval(
        challenger, champion
    )


def test_pairing_makes_the_interval_narrower_than_unpaired_noise() -> None:
    """Resampling trips for both models at once: shared difficulty cancels, so a 5% change on a
    few thousand trips is clearly below zero even though each MAE alone is noisy."""
    challenger, champion = _errors(3000)
    interval = paired_change_interval(challenger, champion)
    assert interval is not None and interval["high"] < -0.03
    spread_of_one_mae = champion.std() / np.sqrt(len(champion)) / champion.mean()
    assert interval["high"] - interval["low"] < 2 * 1.96 * spread_of_one_mae


def test_grouping_a_big_month_keeps_the_width() -> None:
    """Past max_units trips, groups of trips are resampled: same spread, bounded cost."""
    challenger, champion = _errors(60_000, seed=3)
    exact = paired_change_interval(challenger, champion, max_units=10**9, resamples=500)
    grouped = paired_change_interval(challenger, champion, max_units=3000, resamples=500)
    assert exact and grouped and grouped["units"] == 3000 and exact["units"] == 60_000
    width = {k: v["high"] - v["low"] for k, v in (("exact", exact), ("grouped", grouped))}
    assert width["grouped"] == pytest.approx(width["exact"], rel=0.15)


def test_no_interval_without_trips_or_baseline_error() -> None:
    assert paired_change_interval(np.array([]), np.array([])) is None
    assert paired_change_interval(np.ones(5), np.zeros(5)) is None
    with pytest.raises(ValueError, match="one length"):
        paired_change_interval(np.ones(5), np.ones(4))


def test_the_gain_reads_with_its_interval() -> None:
    challenger, champion = _errors(4000, change=-0.3)
    gain = {
        "month": "2024-05", "expected_gain": round(1 - challenger.mean() / champion.mean(), 6),
        "challenger_late_mae": challenger.mean(), "champion_late_mae": champion.mean(),
        "early_rows": 12000, "late_rows": 4000, "cut": "2024-05-24 10:00", "min_retrain_gain": 0.04,
    }  # fmt: skip
    gain = with_interval(gain, challenger, champion)
    ci = gain["expected_gain_ci95"]
    assert ci["low"] < gain["expected_gain"] < ci["high"]  # the gain's, not the change's, sign
    sentence = gain_sentence(gain)
    assert (
        f"by about {gain['expected_gain']:.1%} (95% CI {ci['low'] * 100:.1f} to {ci['high'] * 100:.1f}) ("
        in sentence
    )
    worse = with_interval({**gain, "expected_gain": -0.2}, champion, challenger)
    assert "should not lower next month's MAE (about 20.0% worse; 95% CI" in gain_sentence(worse)
    assert percent_with_interval(-0.408, {"low": -0.421, "high": -0.395, "confidence": 0.95}) == (
        "-40.8% (95% CI -42.1 to -39.5)"
    )


def _scored(rng: np.random.Generator) -> pd.DataFrame:
    """4,000 trips in two boroughs, all day, three vendor values (one unknown)."""
    n = 4000
    boroughs = borough_names()
    frame = pd.DataFrame(
        {
            "pu_borough": rng.choice([boroughs.index("Bronx"), boroughs.index("Manhattan")], n).astype(float),
            "pickup_hour": rng.uniform(0, 24, n),
            "vendor_id": rng.choice([1.0, 2.0, np.nan], n, p=[0.2, 0.7, 0.1]),
            TARGET: rng.uniform(5, 30, n),
        }
    )
    frame["champion"] = frame[TARGET] + rng.normal(0, 4, n)
    # Better on the whole, but far worse at night and somewhat worse on vendor 1's trips.
    noise = np.where(frame["pickup_hour"] < 6, 3.0, 1.0) * np.where(frame["vendor_id"] == 1.0, 2.0, 1.0)
    frame["challenger"] = frame[TARGET] + rng.normal(0, 1.5, n) * noise
    return frame


def test_who_loses_lists_the_segments_the_challenger_is_worse_on_first() -> None:
    rows = who_loses(_scored(np.random.default_rng(0)))
    labels = [(r["by"], r["segment"]) for r in rows]
    assert len(rows) == 2 + len(HOUR_BANDS) + 3
    assert {("vendor", "vendor 1"), ("vendor", "vendor 2"), ("vendor", "vendor unknown")} <= set(labels)
    worse = [r for r in rows if r["challenger_worse"]]
    assert rows[: len(worse)] == worse, "the segments the challenger loses come first"
    assert [(r["by"], r["segment"]) for r in worse] == [
        ("hour band", HOUR_BANDS[0][0]),
        ("vendor", "vendor 1"),
    ]
    changes = [r["mae_relative"] for r in worse]
    assert changes == sorted(changes, reverse=True), "the worst first"
    better = rows[len(worse) :]
    assert [r["mae_relative"] for r in better] == sorted((r["mae_relative"] for r in better), reverse=True)
    assert sum(r["trips"] for r in rows if r["by"] == "borough") == 4000
    for row in rows:
        ci = row["mae_relative_ci95"]
        assert ci["low"] <= row["mae_relative"] <= ci["high"]
