"""reports/loop/comparison.json: champion vs challenger on the new month's holdout, the evidence
a retrain PR carries."""

from __future__ import annotations

from typing import ClassVar

from core.artifacts.base import Artifact, Part
from core.artifacts.metrics import Interval, RegressionMetrics
from core.paths import LOOP_COMPARISON


class Holdout(Part):
    path: str
    sha256: str
    rows: int


class Champion(Part):
    version: str
    training_months: list[str]
    metrics: RegressionMetrics
    # What the champion scored when it was current (the check's evaluate.json), if known.
    reference_holdout: RegressionMetrics | None
    reference_month: str
    current_month_metrics: RegressionMetrics | None


class Challenger(Part):
    version: str
    training_months: list[str]
    reference_month: str
    metrics: RegressionMetrics


class Change(Part):
    """Challenger minus champion (``mae_relative``: MAE ratio - 1)."""

    mae: float
    mae_relative: float
    mae_relative_ci95: Interval | None
    rmse: float
    r2: float


class Segment(Part):
    """autoops/segments.py's ``who_loses`` row: one borough, hour band or vendor."""

    by: str
    segment: str
    trips: int
    champion_mae: float
    challenger_mae: float
    mae_relative: float | None
    mae_relative_ci95: Interval | None
    challenger_worse: bool


class Comparison(Artifact):
    PATH: ClassVar = LOOP_COMPARISON
    WRITTEN_BY: ClassVar = "`autoops propose` (on a retrain branch)"

    month: str
    holdout: Holdout
    champion: Champion
    challenger: Challenger
    change: Change
    challenger_better: bool
    verdict: str
    segments: list[Segment]
