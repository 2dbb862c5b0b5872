"""Drift: has the world moved since the serving model learned it?

Evidently 0.7 compares the current month with the reference holdout on the model's features and
on its predictions (``DataDriftPreset``; Evidently picks each column's test). The retrain
trigger (core/trigger.py) estimates what a retrain would buy next month from the month's own
labels, out of time. Data drift (abrupt change) or a big enough expected gain give one verdict:
``retrain_recommended`` with a reason a person can read, unless the month failed a blocking data
check (core/data_checks.py, whose result drift.json carries under ``data_checks``): then the
verdict is no, and the reason is the data problem. The current month's MAE against the
reference holdout MAE (performance drift) is reported beside it, for information.

The drift stage (stages/drift.py) writes what this computes. ``python -m stages.drift --current
served.parquet`` runs the other check, of the service's exported prediction log
(``prediction_log_drift``): data drift only, into files of its own.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.artifacts.data_checks import DataChecks
from core.artifacts.drift import Drift, ServingDrift
from core.artifacts.evaluation import EvaluationMetrics
from core.evaluation import PREDICTION, load_trained_model
from core.features import CATEGORICAL_FEATURES, FEATURES
from core.io import StageError, open_parquet, read_rows
from core.params import DriftParams, Params
from core.paths import DATA_CHECKS_METRICS, EVALUATE_METRICS, FEATURES_DIR, PREDICTIONS_DIR
from core.trigger import data_problem, decide, estimate_gain_from_file

DRIFT_COLUMNS = [*FEATURES, PREDICTION]
# Evidently stamps random ids into the HTML on every run; they are renumbered in order of
# appearance so the report's bytes (and so dvc.lock) are the same for the same data.
_RANDOM_ID = re.compile(
    r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b|(?<=metric_)[0-9a-f]{32}\b"
)
log = logging.getLogger(__name__)


def stable_ids(html: str) -> str:
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


def _data_checks(month: str, path: Path = DATA_CHECKS_METRICS) -> DataChecks:
    """The data checks' verdict on ``month`` (the data_checks stage's metric)."""
    checks = DataChecks.read(path)
    if checks.month != month:
        raise StageError(f"{path} describes {checks.month}, not {month}; rerun `dvc repro data_checks`")
    return checks


def report_html(snapshot: Any) -> str:
    """The Evidently report a person opens, byte-stable for the same data (see ``stable_ids``)."""
    return stable_ids(snapshot.get_html_str(as_iframe=False))


def month_drift(params: Params) -> tuple[Drift, Any]:
    """The current month against the reference holdout, and the retrain verdict: (drift.json, report)."""
    reference = _read(PREDICTIONS_DIR / "holdout.parquet", params.drift.sample_rows)
    current = _read(PREDICTIONS_DIR / "current.parquet", params.drift.sample_rows)
    evaluation = EvaluationMetrics.read()
    data, snapshot = compute_drift(reference, current, params.drift)
    perf = performance_drift(evaluation.as_dict(), params.drift.performance_threshold)
    gain = None
    # A model that learned the current month (a retrain branch) has nothing to gain from it yet.
    if params.months.current not in params.months.training_months:
        champion, _ = load_trained_model()
        current_features = FEATURES_DIR / "current.parquet"
        gain = estimate_gain_from_file(champion, current_features, params, params.months.current)
    perf = {**perf, "expected_gain": gain and gain["expected_gain"], "gain": gain}
    checks = _data_checks(params.months.current)
    retrain, reason = decide(data, gain, params.drift.min_retrain_gain, checks.as_dict())
    result = Drift(
        reference_month=params.months.reference,
        current_month=params.months.current,
        model_version=evaluation.model_version,
        **data,
        **perf,
        data_checks=checks,
        data_problem=data_problem(checks.as_dict()),
        retrain_recommended=retrain,
        reason=reason,
    )
    return result, snapshot


def prediction_log_drift(
    params: Params,
    log_path: Path,
    *,
    reference_path: Path = PREDICTIONS_DIR / "holdout.parquet",
    evaluation_path: Path = EVALUATE_METRICS,
) -> tuple[ServingDrift, Any]:
    """Data drift of the service's exported prediction log (python -m serve.export_log) against
    the reference holdout.

    The log has no labels yet, so only data drift can be judged; its results go to files of their
    own, so the DVC-tracked outputs always describe the pipeline's month.
    """
    reference = _read(reference_path, params.drift.sample_rows)
    current = _read(log_path, params.drift.sample_rows)
    evaluation = EvaluationMetrics.read(evaluation_path)
    data, snapshot = compute_drift(reference, current, params.drift)
    retrain = data["data_drift"]
    reason = (
        f"prediction log: {len(data['drifted_columns'])} of {data['n_columns']} columns drifted "
        f"(share {data['drifted_share']:.2f}, threshold {data['drift_share_threshold']})"
        + (": retrain recommended" if retrain else ": no data drift")
    )
    result = ServingDrift(
        reference_month=params.months.reference,
        current_month=str(log_path),
        model_version=evaluation.model_version,
        **data,
        performance_drift=False,
        performance_note="no labels in the prediction log",
        retrain_recommended=retrain,
        reason=reason,
    )
    return result, snapshot


def _read(path: Path, rows: int) -> pd.DataFrame:
    """The drift columns of ``path``, sampled as :func:`_sample` would, reading only the sample.

    A month of any size costs ``rows`` rows of memory, and the sample is the very one a whole-file
    read followed by :func:`_sample` gives (same positions, same index), so the report is too.
    """
    if not path.exists():
        raise StageError(f"{path}: missing; run the evaluate stage first (dvc repro evaluate)")
    handle = open_parquet(path)
    columns = [c for c in DRIFT_COLUMNS if c in handle.schema_arrow.names]
    total = handle.metadata.num_rows
    if total <= rows:
        return pd.read_parquet(path, columns=columns)
    positions = np.sort(np.random.RandomState(0).choice(total, size=rows, replace=False))
    frame = read_rows(path, positions, columns=columns).to_pandas()
    frame.index = pd.Index(positions)
    return frame
