"""Stage 4, evaluate: accuracy on the reference holdout and on the whole current month.

The work is core/evaluation.py's; this entry point reads params.yaml and writes the stage's
outputs (see dvc.yaml's `evaluate`): the predictions, the DVC metrics and the plots' data.
"""

from __future__ import annotations

from core.artifacts.evaluation import EvaluationMetrics
from core.evaluation import evaluate as score_months
from core.io import atomic_dir, write_text
from core.params import Params, load_params
from core.paths import EVALUATE_METRICS, PLOTS_DIR, PREDICTIONS_DIR
from core.runner import run_stage


def evaluate(params: Params) -> EvaluationMetrics:
    # The predictions folder appears whole or not at all: a failed scoring leaves the old one.
    with atomic_dir(PREDICTIONS_DIR) as tmp:
        result = score_months(params, tmp)
    write_text(result.predicted_vs_actual.to_csv(index=False), PLOTS_DIR / "predicted_vs_actual.csv")
    write_text(result.error_by_hour.to_csv(index=False), PLOTS_DIR / "error_by_hour.csv")
    result.metrics.write(EVALUATE_METRICS)
    return result.metrics


def main() -> None:
    evaluate(load_params())


if __name__ == "__main__":
    run_stage("evaluate", main)
