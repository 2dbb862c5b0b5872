"""reports/metrics/evaluate.json: the evaluate stage's accuracy on the reference holdout and the month."""

from __future__ import annotations

from typing import ClassVar, Literal

from core.artifacts.base import Artifact
from core.artifacts.metrics import RegressionMetrics
from core.paths import EVALUATE_METRICS


class EvaluationMetrics(Artifact):
    PATH: ClassVar = EVALUATE_METRICS
    WRITTEN_BY: ClassVar = "the evaluate stage (dvc repro evaluate)"

    model_version: str
    reference_month: str
    current_month: str
    # "holdout" on a retrain branch, whose model learned most of the month: only its holdout rows
    # are out of sample.
    current_rows: Literal["month", "holdout"]
    reference_holdout: RegressionMetrics
    current: RegressionMetrics
