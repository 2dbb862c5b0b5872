"""`autoops summary`: the last pipeline run in short (metrics, drift verdict, where the reports are).

Not a DVC stage: it only reads what the stages wrote, so it lives with the CLI that prints it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.table import Table

from core.artifacts.base import Artifact
from core.artifacts.drift import Drift
from core.artifacts.evaluation import EvaluationMetrics
from core.artifacts.model_card import ModelCard
from core.paths import DRIFT_METRICS, DRIFT_REPORT, EVALUATE_METRICS, MODEL_CARD, MODELS_DIR, REGISTRY_FILE

A = TypeVar("A", bound=Artifact)


def _load(model: type[A], path: Path) -> A | None:
    return model.read(path) if path.exists() else None


def summary(console: Console | None = None) -> int:
    console = console or Console()
    evaluation, drift = _load(EvaluationMetrics, EVALUATE_METRICS), _load(Drift, DRIFT_METRICS)
    card = _load(ModelCard, MODEL_CARD)
    registry_path = MODELS_DIR / REGISTRY_FILE
    registry = json.loads(registry_path.read_text()) if registry_path.exists() else None
    if evaluation is None or drift is None or card is None:
        console.print("[red]no complete pipeline run found[/red]: run `dvc repro` first")
        return 1
    table = Table(title=f"Model {card.name} {card.version} ({card.model_type})")
    for column in ("data", "month", "rows", "MAE", "RMSE", "R²"):
        table.add_column(column, justify="right" if column not in ("data", "month") else "left")
    for label, m, month in (
        ("reference holdout", evaluation.reference_holdout, evaluation.reference_month),
        ("current month", evaluation.current, evaluation.current_month),
    ):
        table.add_row(label, month, f"{m.rows:,}", f"{m.mae:.3f}", f"{m.rmse:.3f}", f"{m.r2:.3f}")
    console.print(table)
    colour = "red" if drift.data_problem else "yellow" if drift.retrain_recommended else "green"
    console.print(f"[bold {colour}]{drift.reason}[/bold {colour}]")
    for check in drift.data_checks.checks if drift.data_checks else []:
        if not check.passed:
            kind = "blocks" if check.blocking else "warning"
            limit = check.threshold_text
            console.print(f"data check {check.name} ({kind}): {check.detail} (threshold {limit})")
    if registry:
        name, version = registry["registered_model"], registry["version"]
        console.print(f"MLflow: {name} v{version} at {registry['tracking_uri']}")
    console.print(
        f"Reports: {DRIFT_REPORT} (Evidently, open in a browser), {EVALUATE_METRICS}, {DRIFT_METRICS}; "
        "plots: `dvc plots show`"
    )
    return 0
