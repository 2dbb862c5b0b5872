"""models/model_card.json: what serving, the release and MLflow know of a model without loading it."""

from __future__ import annotations

from typing import ClassVar

from core.artifacts.base import Artifact
from core.artifacts.metrics import RegressionMetrics
from core.paths import MODEL_CARD


class ModelCard(Artifact):
    PATH: ClassVar = MODEL_CARD
    WRITTEN_BY: ClassVar = "the train stage (dvc repro train)"

    name: str
    # The first 12 hex digits of model_sha256.
    version: str
    model_type: str
    model_params: dict[str, int | float | str | bool | None]
    model_file: str
    model_sha256: str
    training_months: list[str]
    reference_month: str
    features: list[str]
    categorical_features: list[str]
    input_columns: list[str]
    target: str
    training_rows: int
    data_source: str
    train_data_sha256: str
    holdout_metrics: RegressionMetrics
    # Only when train.max_rows sampled the training rows, so a smaller month keeps its card's bytes.
    training_rows_available: int | None = None
    train_max_rows: int | None = None
