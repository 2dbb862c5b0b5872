"""Stage 2, featurize: target, filters and features for the training window and the current month.

Writes data/features/{train,holdout,current}.parquet: the model's features (stages/features.py,
the same code the service runs), the target ``duration_min`` and the pickup ``month``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from stages.features import PICKUP_TIME, TARGET, duration_minutes, feature_frame, filter_mask
from stages.ingest import raw_path, read_parquet_file
from stages.io import StageError, atomic_dir, write_parquet
from stages.months import month_bounds
from stages.params import Params, load_params
from stages.paths import FEATURES_DIR, RAW_DIR
from stages.runner import run_stage

log = logging.getLogger(__name__)


def month_frame(month: str, params: Params, raw_dir: Path = RAW_DIR) -> pd.DataFrame:
    """Features + target of one ingested month, after the filters."""
    path = raw_path(month, raw_dir)
    if not path.exists():
        raise StageError(f"{path}: missing; run the ingest stage first (dvc repro ingest)")
    trips = read_parquet_file(path).to_pandas()
    start, end = month_bounds(month)
    kept = trips[filter_mask(trips, start, end, params.filters)]
    if kept.empty:
        raise StageError(
            f"{path}: no trips left after the filters ({len(trips)} rows before); "
            "is the month empty or are the filters in params.yaml too strict?"
        )
    frame = feature_frame(kept)
    frame[TARGET] = duration_minutes(kept).to_numpy()
    frame[PICKUP_TIME] = kept["lpep_pickup_datetime"].to_numpy(dtype="datetime64[us]")
    frame["month"] = month
    log.info("%s: %d of %d trips kept", month, len(frame), len(trips))
    return frame


def split_holdout(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    # A seeded shuffle, not a time cut: the holdout should look like the training month, so its
    # MAE is the reference that later months are compared with.
    order = np.random.default_rng(seed).permutation(len(frame))
    n_holdout = max(1, round(len(frame) * fraction))
    holdout = frame.iloc[np.sort(order[:n_holdout])]
    train = frame.iloc[np.sort(order[n_holdout:])]
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def featurize(params: Params, raw_dir: Path = RAW_DIR, out_dir: Path = FEATURES_DIR) -> None:
    window = pd.concat([month_frame(m, params, raw_dir) for m in params.months.training_months])
    train, holdout = split_holdout(window, params.split.holdout_fraction, params.split.seed)
    current = month_frame(params.months.current, params, raw_dir)
    with atomic_dir(out_dir) as tmp:
        for name, frame in (("train", train), ("holdout", holdout), ("current", current)):
            write_parquet(pa.Table.from_pandas(frame, preserve_index=False), tmp / f"{name}.parquet")
    log.info("train %d, holdout %d, current %d rows", len(train), len(holdout), len(current))


def main() -> None:
    featurize(load_params())


if __name__ == "__main__":
    run_stage("featurize", main)
