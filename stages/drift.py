"""Stage 5, drift: has the world moved since the serving model learned it?

Evidently 0.7 compares the current month with the reference holdout on the model's features and
on its predictions (``DataDriftPreset``; Evidently picks each column's test). The retrain
trigger (stages/trigger.py) estimates what a retrain would buy next month from the month's own
labels, out of time. Data drift (abrupt change) or a big enough expected gain give one verdict:
``retrain_recommended`` with a reason a person can read. The current month's MAE against the
reference holdout MAE (performance drift) is reported beside it, for information.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from stages.evaluate import METRICS_FILE as EVALUATE_METRICS
from stages.evaluate import PREDICTION, PREDICTIONS_DIR
from stages.features import CATEGORICAL_FEATURES, FEATURES
from stages.io import StageError, write_json, write_text
from stages.params import DriftParams, Params, load_params
from stages.runner import run_stage
from stages.trigger import decide, estimate_gain

DRIFT_METRICS = Path("reports/metrics/drift.json")
DRIFT_REPORT = Path("reports/drift_report.html")
DRIFT_COLUMNS = [*FEATURES, PREDICTION]
# Evidently stamps random ids into the HTML on every run; they are renumbered in order of
# appearance so the report's bytes (and so dvc.lock) are the same for the same data.
_RANDOM_ID = re.compile(
    r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b|(?<=metric_)[0-9a-f]{32}\b"
)
log = logging.getLogger(__name__)


def _stable_ids(html: str) -> str:
    seen: dict[str, str] = {}

    def renumber(match: re.Match[str]) -> str:
        key = match.group(0)
        if key not in seen:
            n = len(seen)
            seen[key] = f"{n:032x}" if len(key) == 32 else f"00000000-0000-4000-8000-{n:012x}"
        return seen[key]

    return _RANDOM_ID.sub(renumber, html)


def _sample(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    # Deterministic: the same data always gives the same sample, hence the same verdict.
    if len(frame) <= rows:
        return frame
    return frame.sample(n=rows, random_state=0).sort_index()


def compute_drift(
    reference: pd.DataFrame, current: pd.DataFrame, params: DriftParams, columns: list[str] | None = None
) -> tuple[dict[str, Any], Any]:
    """Run Evidently on ``columns`` (default: features + prediction).

    Returns the per-column results and the dataset verdict, plus the Evidently snapshot (for HTML).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = columns or [c for c in DRIFT_COLUMNS if c in reference and c in current]
    if reference.empty or current.empty:
        raise StageError("drift needs rows on both sides: the reference or the current data is empty")
    definition = DataDefinition(
        numerical_columns=[c for c in columns if c not in CATEGORICAL_FEATURES],
        categorical_columns=[c for c in columns if c in CATEGORICAL_FEATURES],
    )
    ref = Dataset.from_pandas(_sample(reference[columns], params.sample_rows), data_definition=definition)
    cur = Dataset.from_pandas(_sample(current[columns], params.sample_rows), data_definition=definition)
    report = Report([DataDriftPreset(columns=columns, drift_share=params.drift_share)], include_tests=True)
    snapshot = report.run(current_data=cur, reference_data=ref)
    result = snapshot.dict()
    by_id = {m["id"]: m for m in result["metrics"]}
    detected = {
        by_id[t["metric_config"]["metric_id"]]["config"]["column"]: t["status"] == "FAIL"
        for t in result["tests"]
        if t["metric_config"]["params"].get("type", "").endswith("ValueDrift")
    }
    per_column = {}
    for metric in result["metrics"]:
        config = metric["config"]
        if not config["type"].endswith("ValueDrift"):
            continue
        per_column[config["column"]] = {
            "score": round(float(metric["value"]), 6),
            "method": config["method"],
            "threshold": config["threshold"],
            "drifted": bool(detected[config["column"]]),
        }
    drifted = sorted(c for c, v in per_column.items() if v["drifted"])
    share = len(drifted) / len(per_column)
    summary = {
        "columns": per_column,
        "drifted_columns": drifted,
        "n_columns": len(per_column),
        "drifted_share": round(share, 6),
        "drift_share_threshold": params.drift_share,
        "data_drift": share >= params.drift_share,
        "prediction_drift": per_column.get(PREDICTION, {}).get("drifted", False),
    }
    return summary, snapshot


def performance_drift(evaluation: dict[str, Any], threshold: float) -> dict[str, Any]:
    ref_mae = evaluation["reference_holdout"]["mae"]
    cur_mae = evaluation["current"]["mae"]
    change = cur_mae / ref_mae - 1.0
    return {
        "reference_mae": ref_mae,
        "current_mae": cur_mae,
        "mae_change": round(change, 6),
        "threshold": threshold,
        "performance_drift": change > threshold,
    }


SERVING_DRIFT_METRICS = Path("reports/serving_drift.json")
SERVING_DRIFT_REPORT = Path("reports/serving_drift_report.html")


def drift(params: Params, current_path: Path | None = None) -> dict[str, Any]:
    """Compare the current month, or ``current_path`` (the service's exported prediction log),
    with the reference holdout.

    The prediction log has no labels yet, so in that mode only data drift can be judged; its
    results go to separate files so the DVC-tracked outputs always describe the pipeline's month.
    """
    reference = _read(PREDICTIONS_DIR / "holdout.parquet")
    current = _read(current_path or PREDICTIONS_DIR / "current.parquet")
    if not EVALUATE_METRICS.exists():
        raise StageError(f"{EVALUATE_METRICS}: missing; run the evaluate stage first")
    evaluation = json.loads(EVALUATE_METRICS.read_text())
    data, snapshot = compute_drift(reference, current, params.drift)
    if current_path is None:
        from stages.evaluate import load_trained_model
        from stages.train import read_features

        perf = performance_drift(evaluation, params.drift.performance_threshold)
        gain = None
        # A model that learned the current month (a retrain branch) has nothing to gain from it yet.
        if params.months.current not in params.months.training_months:
            champion, _ = load_trained_model()
            gain = estimate_gain(champion, read_features("current"), params, params.months.current)
        perf = {**perf, "expected_gain": gain and gain["expected_gain"], "gain": gain}
        retrain, reason = decide(data, gain, params.drift.min_retrain_gain)
        report_path, metrics_path = DRIFT_REPORT, DRIFT_METRICS
        current_label = params.months.current
    else:
        perf = {"performance_drift": False, "performance_note": "no labels in the prediction log"}
        retrain = data["data_drift"]
        reason = (
            f"prediction log: {len(data['drifted_columns'])} of {data['n_columns']} columns drifted "
            f"(share {data['drifted_share']:.2f}, threshold {data['drift_share_threshold']})"
            + (": retrain recommended" if retrain else ": no data drift")
        )
        report_path, metrics_path = SERVING_DRIFT_REPORT, SERVING_DRIFT_METRICS
        current_label = str(current_path)
    result = {
        "reference_month": params.months.reference,
        "current_month": current_label,
        "model_version": evaluation["model_version"],
        **data,
        **perf,
        "retrain_recommended": retrain,
        "reason": reason,
    }
    write_text(_stable_ids(snapshot.get_html_str(as_iframe=False)), report_path)
    write_json(result, metrics_path)
    log.info(reason)
    return result


def _read(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise StageError(f"{path}: missing; run the evaluate stage first (dvc repro evaluate)")
    return pd.read_parquet(path)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Data and performance drift (the DVC drift stage).")
    parser.add_argument(
        "--current",
        type=Path,
        help="parquet of served requests (python -m serve.export_log) to check instead of the month",
    )
    drift(load_params(), current_path=parser.parse_args().current)


if __name__ == "__main__":
    run_stage("drift", main)
