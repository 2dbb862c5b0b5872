"""Feature tables: target, filters and features for the training window and the current month.

The featurize stage (stages/featurize.py) writes them as data/features/{train,holdout,current}.parquet:
the model's features (core/features.py,
the same code the service runs), the target ``duration_min`` and the pickup ``month``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from core.features import (
    INPUT_COLUMNS,
    PICKUP_TIME,
    TARGET,
    duration_minutes,
    feature_frame,
    filter_mask,
)
from core.io import FrameWriter, StageError, iter_row_groups
from core.months import month_bounds
from core.params import Params
from core.paths import RAW_DIR, raw_path

log = logging.getLogger(__name__)


# What the features, the target and the filters read from an ingested month.
RAW_COLUMNS = [*INPUT_COLUMNS, "lpep_dropoff_datetime"]


def _kept_batches(month: str, params: Params, raw_dir: Path) -> Iterator[tuple[pd.DataFrame, int]]:
    """Per row group of the ingested month: the trips the filters keep, and the rows read."""
    path = raw_path(month, raw_dir)
    if not path.exists():
        raise StageError(f"{path}: missing; run the ingest stage first (dvc repro ingest)")
    start, end = month_bounds(month)
    for table in iter_row_groups(path, columns=RAW_COLUMNS):
        trips = table.to_pandas()
        yield trips[filter_mask(trips, start, end, params.filters)], len(trips)


def _features(kept: pd.DataFrame, month: str) -> pd.DataFrame:
    frame = feature_frame(kept)
    frame[TARGET] = duration_minutes(kept).to_numpy()
    frame[PICKUP_TIME] = kept["lpep_pickup_datetime"].to_numpy(dtype="datetime64[us]")
    frame["month"] = month
    return frame


def _nothing_kept(month: str, raw_dir: Path, rows: int) -> StageError:
    return StageError(
        f"{raw_path(month, raw_dir)}: no trips left after the filters ({rows} rows before); "
        "is the month empty or are the filters in params.yaml too strict?"
    )


def month_frame(month: str, params: Params, raw_dir: Path = RAW_DIR) -> pd.DataFrame:
    """Features + target of one ingested month, after the filters (in memory: for small months)."""
    frames, rows = [], 0
    for kept, read in _kept_batches(month, params, raw_dir):
        frames.append(_features(kept, month))
        rows += read
    if not frames or rows == 0:
        raise _nothing_kept(month, raw_dir, rows)
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if frame.empty:
        raise _nothing_kept(month, raw_dir, rows)
    log.info("%s: %d of %d trips kept", month, len(frame), rows)
    return frame


def split_holdout(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    is_holdout = holdout_mask(len(frame), fraction, seed)
    return frame[~is_holdout].reset_index(drop=True), frame[is_holdout].reset_index(drop=True)


def holdout_mask(rows: int, fraction: float, seed: int) -> np.ndarray:
    # A seeded shuffle, not a time cut: the holdout should look like the training month, so its
    # MAE is the reference that later months are compared with.
    order = np.random.default_rng(seed).permutation(rows)
    is_holdout = np.zeros(rows, dtype=bool)
    is_holdout[order[: max(1, round(rows * fraction))]] = True
    return is_holdout


def write_feature_tables(params: Params, raw_dir: Path, out_dir: Path) -> None:
    """Streams every month twice (count, then split and write): memory stays bounded by a row group."""
    months = params.months.training_months
    kept_rows = {}
    for month in months:
        counts = [(len(kept), read) for kept, read in _kept_batches(month, params, raw_dir)]
        kept_rows[month] = sum(k for k, _ in counts)
        if kept_rows[month] == 0:
            raise _nothing_kept(month, raw_dir, sum(r for _, r in counts))
    # The split needs the window's size before any row is placed: the same shuffle as in memory.
    is_holdout = holdout_mask(sum(kept_rows.values()), params.split.holdout_fraction, params.split.seed)
    with contextlib.ExitStack() as stack:
        train, holdout, current = (
            FrameWriter(out_dir / f"{n}.parquet", stack) for n in ("train", "holdout", "current")
        )
        offset = 0
        for month in months:
            rows = 0
            for kept, read in _kept_batches(month, params, raw_dir):
                frame = _features(kept, month)
                mask = is_holdout[offset : offset + len(frame)]
                offset += len(frame)
                rows += read
                holdout.add(frame[mask])
                train.add(frame[~mask])
            log.info("%s: %d of %d trips kept", month, kept_rows[month], rows)
        rows = 0
        for kept, read in _kept_batches(params.months.current, params, raw_dir):
            current.add(_features(kept, params.months.current))
            rows += read
        for writer in (train, holdout, current):
            writer.flush()
        if current.rows == 0:
            raise _nothing_kept(params.months.current, raw_dir, rows)
        log.info("%s: %d of %d trips kept", params.months.current, current.rows, rows)
    log.info("train %d, holdout %d, current %d rows", train.rows, holdout.rows, current.rows)
