"""A short human summary of the last pipeline run: metrics, drift verdict, where the reports are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from core.model import CARD_FILE
from core.paths import DRIFT_METRICS, DRIFT_REPORT, MODELS_DIR
from core.paths import EVALUATE_METRICS as METRICS_FILE
from core.training import REGISTRY_FILE


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def summary(console: Console | None = None) -> int:
    console = console or Console()
    evaluation, drift = _load(METRICS_FILE), _load(DRIFT_METRICS)
    card, registry = _load(MODELS_DIR / CARD_FILE), _load(MODELS_DIR / REGISTRY_FILE)
    if evaluation is None or drift is None or card is None:
        console.print("[red]no complete pipeline run found[/red]: run `dvc repro` first")
        return 1
    table = Table(title=f"Model {card['name']} {card['version']} ({card['model_type']})")
    for column in ("data", "month", "rows", "MAE", "RMSE", "R²"):
        table.add_column(column, justify="right" if column not in ("data", "month") else "left")
    for label, key, month in (
        ("reference holdout", "reference_holdout", evaluation["reference_month"]),
        ("current month", "current", evaluation["current_month"]),
    ):
        m = evaluation[key]
        table.add_row(label, month, f"{m['rows']:,}", f"{m['mae']:.3f}", f"{m['rmse']:.3f}", f"{m['r2']:.3f}")
    console.print(table)
    colour = "red" if drift.get("data_problem") else "yellow" if drift["retrain_recommended"] else "green"
    console.print(f"[bold {colour}]{drift['reason']}[/bold {colour}]")
    checks = drift.get("data_checks") or {}
    for check in checks.get("checks", []):
        if not check["passed"]:
            kind = "blocks" if check["blocking"] else "warning"
            limit = check["threshold_text"]
            console.print(f"data check {check['name']} ({kind}): {check['detail']} (threshold {limit})")
    if registry:
        name, version = registry["registered_model"], registry["version"]
        console.print(f"MLflow: {name} v{version} at {registry['tracking_uri']}")
    console.print(
        f"Reports: {DRIFT_REPORT} (Evidently, open in a browser), {METRICS_FILE}, {DRIFT_METRICS}; "
        "plots: `dvc plots show`"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(summary())
