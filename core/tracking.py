"""MLflow: where runs and registered model versions go.

The embedded default is ``sqlite:///mlflow.db`` in the repository root (MLflow 3 no longer
supports the plain file store); set ``MLFLOW_TRACKING_URI`` to use a tracking server instead.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
CHAMPION, CHALLENGER = "champion", "challenger"

log = logging.getLogger(__name__)


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def configure() -> Any:
    """Import and point MLflow at the tracking store; returns the ``mlflow`` module."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow and alembic are chatty at INFO (schema migrations on a new sqlite file).
    for name in ("alembic", "mlflow", "mlflow.store", "mlflow.tracking"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="mlflow")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow
