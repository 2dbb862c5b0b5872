"""Stage 5, drift: has the world moved since the serving model learned it?

The work is core/drift.py's (Evidently's data drift, the retrain trigger's expected gain, the
data checks' verdict, one decision); this entry point reads params.yaml and writes the report a
person opens and the DVC metric the loop reads (see dvc.yaml's `drift`).

``python -m stages.drift --current served.parquet`` checks the service's exported prediction log
instead (data drift only), into files of its own, so the DVC-tracked outputs always describe the
pipeline's month.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from core.artifacts.drift import Drift, ServingDrift
from core.drift import month_drift, prediction_log_drift, report_html
from core.io import write_text
from core.params import Params, load_params
from core.paths import (
    DRIFT_METRICS,
    DRIFT_REPORT,
    EVALUATE_METRICS,
    PREDICTIONS_DIR,
    SERVING_DRIFT_METRICS,
    SERVING_DRIFT_REPORT,
)
from core.runner import run_stage

log = logging.getLogger(__name__)


def _publish(result: Drift | ServingDrift, snapshot: Any, report_path: Path, metrics_path: Path) -> None:
    write_text(report_html(snapshot), report_path)
    result.write(metrics_path)
    log.info(result.reason)


def drift(params: Params) -> Drift:
    """The DVC stage: the current month against the reference holdout, and the retrain verdict."""
    result, snapshot = month_drift(params)
    _publish(result, snapshot, DRIFT_REPORT, DRIFT_METRICS)
    return result


def check_prediction_log(
    params: Params,
    log_path: Path,
    *,
    reference_path: Path = PREDICTIONS_DIR / "holdout.parquet",
    evaluation_path: Path = EVALUATE_METRICS,
    report_path: Path = SERVING_DRIFT_REPORT,
    metrics_path: Path = SERVING_DRIFT_METRICS,
) -> ServingDrift:
    """Data drift of the service's exported prediction log (python -m serve.export_log)."""
    result, snapshot = prediction_log_drift(
        params, log_path, reference_path=reference_path, evaluation_path=evaluation_path
    )
    _publish(result, snapshot, report_path, metrics_path)
    return result


def main(
    current: Annotated[
        Path | None,
        typer.Option(
            "--current",
            help="parquet of served requests (python -m serve.export_log) to check instead of the month",
        ),
    ] = None,
) -> None:
    """Data and performance drift (the DVC drift stage), or the drift of a prediction log."""
    if current is None:
        drift(load_params())
    else:
        check_prediction_log(load_params(), current)


if __name__ == "__main__":
    run_stage("drift", lambda: typer.run(main))
