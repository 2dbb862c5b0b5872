"""The parts several artifacts share: a model's regression metrics and a bootstrap interval."""

from __future__ import annotations

from core.artifacts.base import Part


class RegressionMetrics(Part):
    """core/metrics.py's ``regression_metrics`` of one model on one set of rows."""

    mae: float
    rmse: float
    r2: float
    rows: int


class Interval(Part):
    """core/bootstrap.py's paired bootstrap interval of a relative change."""

    low: float
    high: float
    confidence: float
    resamples: int
    trips: int
    units: int
    seed: int
