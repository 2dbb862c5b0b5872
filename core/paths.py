"""Where the project keeps its files, relative to its root: one definition each.

A leaf module (it imports nothing of the project), so a stage that only needs to know where an
earlier stage wrote does not import that stage, and with it the earlier stage's code and
dependencies (dvc.yaml lists every module a stage imports; tests/test_dvc_deps.py checks it).
"""

from __future__ import annotations

from pathlib import Path

PARAMS_FILE = Path("params.yaml")
DVC_YAML = Path("dvc.yaml")
DVC_LOCK = Path("dvc.lock")

# Stage outputs, in pipeline order.
RAW_DIR = Path("data/raw")
FEATURES_DIR = Path("data/features")
MODELS_DIR = Path("models")
# The model card beside the model (core/artifacts/model_card.py); serving reads it by this name too.
CARD_FILE = "model_card.json"
MODEL_CARD = MODELS_DIR / CARD_FILE
# What the train stage registered in MLflow. Not a DVC output: its contents (run id, version
# number) depend on the tracking store, not on the data, and would break reproducibility.
REGISTRY_FILE = "registry.json"
PREDICTIONS_DIR = Path("data/predictions")
EVALUATE_METRICS = Path("reports/metrics/evaluate.json")
PLOTS_DIR = Path("reports/plots")
DATA_CHECKS_METRICS = Path("reports/metrics/data_checks.json")
DRIFT_METRICS = Path("reports/metrics/drift.json")
DRIFT_REPORT = Path("reports/drift_report.html")
# The check of the service's prediction log (python -m stages.drift serving): not DVC outputs, so the
# tracked ones always describe the pipeline's month.
SERVING_DRIFT_METRICS = Path("reports/serving_drift.json")
SERVING_DRIFT_REPORT = Path("reports/serving_drift_report.html")

# The loop's files. Scratch space for one run (check result, champion snapshot, evidence for the CI
# artifact): it ignores itself, so nothing in it is ever committed.
WORK_DIR = Path(".autoops")
RELEASE_DIR = WORK_DIR / "release"
CHECK_RESULT = WORK_DIR / "check.json"
# The evidence a retrain PR commits.
LOOP_DIR = Path("reports/loop")
LOOP_REPORT = LOOP_DIR / "report.md"
# The check's drift metrics as the trigger saw them, and champion vs challenger on the same rows.
LOOP_DRIFT = LOOP_DIR / "drift.json"
LOOP_COMPARISON = LOOP_DIR / "comparison.json"
# `autoops backtest`'s reports (its --out folder).
REPORTS_DIR = Path("reports")
BACKTEST_RESULT = REPORTS_DIR / "backtest.json"


def raw_path(month: str, folder: Path = RAW_DIR) -> Path:
    """The ingest stage's file for ``month``: TLC's own name, in the canonical schema."""
    return folder / f"green_tripdata_{month}.parquet"
