"""Who loses: champion vs challenger MAE per pickup borough, hour band and vendor.

A challenger that wins on the month's average can still be worse for part of it (a borough, the
night, one vendor's trips). The retrain PR lists those parts first, each with its trip count and
the paired bootstrap interval of its change (core/bootstrap.py), so a reviewer sees where the
new model costs something and whether that rests on 40 trips or 4,000.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.bootstrap import paired_change_interval
from core.features import TARGET, borough_names

# Bands of the pickup hour by how congested the streets are, not equal slices of the day: trips
# take the fewest minutes per mile at night and the most in the two rush hours, and a model that
# misjudges traffic loses in the peaks while one that misjudges empty streets loses at night.
# Equal slices would split a rush hour and blend it with the quiet hours beside it.
# (name, first hour, hour after the last), covering 0-24 without gaps; `pickup_hour` is fractional.
HOUR_BANDS: tuple[tuple[str, int, int], ...] = (
    ("night 0-6h", 0, 6),
    ("morning peak 6-10h", 6, 10),
    ("midday 10-15h", 10, 15),
    ("evening peak 15-19h", 15, 19),
    ("late evening 19-24h", 19, 24),
)
# The features a segment is read from (holdout columns, the model's own encoding).
SEGMENT_COLUMNS = ("pu_borough", "pickup_hour", "vendor_id")
SEGMENT_KINDS = ("borough", "hour band", "vendor")


def hour_band(hours: pd.Series) -> pd.Series:
    edges = [start for _, start, _ in HOUR_BANDS] + [HOUR_BANDS[-1][2]]
    names = [name for name, _, _ in HOUR_BANDS]
    return pd.cut(hours, bins=edges, labels=names, right=False).astype(str)


def segment_labels(scored: pd.DataFrame) -> dict[str, pd.Series]:
    """Each trip's segment of every kind, as readable labels (borough names, not codes)."""
    boroughs = np.array(borough_names(), dtype=object)
    codes = scored["pu_borough"].to_numpy(dtype=np.float64)
    known = np.isfinite(codes) & (codes >= 0) & (codes < len(boroughs))
    borough = np.where(known, boroughs[np.where(known, codes, 0).astype(np.int64)], "Unknown")
    # Labels per distinct id, not per trip: a 4-million-trip holdout has two or three vendors.
    ids, which = np.unique(scored["vendor_id"].to_numpy(dtype=np.float64), return_inverse=True)
    names = np.array([f"vendor {v:.0f}" if np.isfinite(v) else "vendor unknown" for v in ids], dtype=object)
    return {
        "borough": pd.Series(borough, index=scored.index),
        "hour band": hour_band(scored["pickup_hour"]),
        "vendor": pd.Series(names[which.reshape(-1)], index=scored.index),
    }


def who_loses(scored: pd.DataFrame) -> list[dict[str, Any]]:
    """Per segment: trips, both MAEs, the relative change and its 95% interval.

    ``scored`` holds the target, ``champion`` and ``challenger`` predictions and the
    :data:`SEGMENT_COLUMNS`. Rows where the challenger is worse come first, the worst first; then
    the rest, the smallest improvement first (ties: kind, then label).
    """
    challenger = (scored["challenger"] - scored[TARGET]).abs().to_numpy(dtype=np.float64)
    champion = (scored["champion"] - scored[TARGET]).abs().to_numpy(dtype=np.float64)
    rows = []
    for kind, labels in segment_labels(scored).items():
        for label in sorted(labels.unique()):
            mask = (labels == label).to_numpy()
            ours, theirs = challenger[mask], champion[mask]
            champ_mae, chall_mae = float(theirs.mean()), float(ours.mean())
            change = chall_mae / champ_mae - 1.0 if champ_mae > 0 else None
            interval = paired_change_interval(ours, theirs)
            rows.append(
                {
                    "by": kind,
                    "segment": label,
                    "trips": int(mask.sum()),
                    "champion_mae": round(champ_mae, 6),
                    "challenger_mae": round(chall_mae, 6),
                    "mae_relative": None if change is None else round(change, 6),
                    "mae_relative_ci95": interval,
                    "challenger_worse": chall_mae > champ_mae,
                }
            )
    return sorted(
        rows,
        key=lambda r: (
            not r["challenger_worse"],
            -(r["mae_relative"] or 0.0),
            SEGMENT_KINDS.index(r["by"]),
            r["segment"],
        ),
    )
