"""reports/metrics/drift.json (the drift stage's verdict) and reports/serving_drift.json (the
prediction log's data drift): Evidently's per-column results, the trigger's estimate, the verdict."""

from __future__ import annotations

from typing import ClassVar

from core.artifacts.base import Artifact, Part
from core.artifacts.data_checks import DataChecks
from core.artifacts.metrics import Interval
from core.paths import DRIFT_METRICS, SERVING_DRIFT_METRICS


class DriftColumn(Part):
    score: float
    method: str
    threshold: float
    drifted: bool


class Gain(Part):
    """core/trigger.py's estimate of what a retrain on the month buys next month."""

    month: str
    challenger_late_mae: float
    champion_late_mae: float
    early_rows: int
    late_rows: int
    # The pickup time the month is cut at ("YYYY-MM-DD HH:MM").
    cut: str
    expected_gain: float
    min_retrain_gain: float
    # Absent where the interval was not computed (the backtest's estimates).
    expected_gain_ci95: Interval | None = None


class DataDrift(Part):
    """Evidently's data drift (core/drift.py's ``compute_drift``), per column and for the dataset."""

    columns: dict[str, DriftColumn]
    drifted_columns: list[str]
    n_columns: int
    drifted_share: float
    drift_share_threshold: float
    data_drift: bool
    prediction_drift: bool


class Drift(DataDrift, Artifact):
    PATH: ClassVar = DRIFT_METRICS
    WRITTEN_BY: ClassVar = "the drift stage (dvc repro drift)"

    reference_month: str
    current_month: str
    model_version: str
    # Performance drift: the month's MAE against the reference holdout's.
    reference_mae: float
    current_mae: float
    mae_change: float
    threshold: float
    performance_drift: bool
    # None when the model learned the month itself (a retrain branch): nothing to estimate.
    expected_gain: float | None
    gain: Gain | None
    # Absent from a drift.json written before the data checks existed (an older retrain branch's
    # reports/loop/drift.json, which `autoops report` still renders).
    data_checks: DataChecks | None = None
    data_problem: str | None = None
    retrain_recommended: bool
    reason: str


class ServingDrift(DataDrift, Artifact):
    """The prediction log against the reference holdout: data drift only (no labels yet)."""

    PATH: ClassVar = SERVING_DRIFT_METRICS
    WRITTEN_BY: ClassVar = "python -m stages.drift --current <log.parquet>"

    reference_month: str
    # The log's path.
    current_month: str
    model_version: str
    performance_drift: bool
    performance_note: str
    retrain_recommended: bool
    reason: str
