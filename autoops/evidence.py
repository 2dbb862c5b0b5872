"""The evidence a retrain pull request carries: champion vs challenger on the same rows, as files.

``compare`` scores both models on the new month's holdout, with the paired bootstrap interval of
the MAE change (core/bootstrap.py) and who loses (autoops/segments.py); ``write_evidence``
writes what the PR shows, small enough to commit on the retrain branch (under reports/loop/). The
plots are drawn from these files by autoops/evidence_plots.py and the markdown by
autoops/evidence_report.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autoops.gitops import LoopError
from autoops.segments import SEGMENT_COLUMNS, who_loses
from core.artifacts.comparison import Challenger, Champion, Change, Comparison, Holdout, Segment
from core.artifacts.drift import Drift
from core.artifacts.evaluation import EvaluationMetrics
from core.artifacts.metrics import Interval, RegressionMetrics
from core.artifacts.model_card import ModelCard
from core.bootstrap import paired_change_interval, percent_with_interval
from core.evaluation import PREDICTION, load_trained_model
from core.features import TARGET
from core.io import StageError, file_sha256, write_text
from core.metrics import mae_by_hour, regression_metrics
from core.paths import LOOP_COMPARISON, LOOP_DIR, LOOP_DRIFT, LOOP_REPORT
from core.training import xy

TRIGGER_DRIFT = LOOP_DRIFT
COMPARISON = LOOP_COMPARISON
ERROR_BY_HOUR = LOOP_DIR / "error_by_hour.csv"
PRED_VS_ACTUAL = LOOP_DIR / "predicted_vs_actual.csv"
DURATION_HIST = LOOP_DIR / "duration_distribution.csv"
REPORT = LOOP_REPORT
# Enough points to see the shape of each model's errors, few enough for a small committed CSV.
SCATTER_POINTS = 1000
DURATION_BINS = np.arange(0, 62, 2)


# --- champion vs challenger --------------------------------------------------------------------


def load_model_and_card(models_dir: Path) -> tuple[Any, ModelCard]:
    """``core.evaluation.load_trained_model`` (same order), its failures as the loop's errors."""
    try:
        return load_trained_model(models_dir)
    except (StageError, ValueError) as exc:  # ValueError: the model does not match its card
        raise LoopError(str(exc)) from exc


def compare(
    champion_dir: Path,
    challenger_dir: Path,
    holdout_path: Path,
    champion_evaluation: EvaluationMetrics,
) -> tuple[Comparison, pd.DataFrame]:
    """Score both models on the very same rows: the new month's holdout the challenger never saw.

    Returns the comparison and the holdout with both models' predictions (for the plots).
    """
    champion, champion_card = load_model_and_card(champion_dir)
    challenger, challenger_card = load_model_and_card(challenger_dir)
    if not holdout_path.exists():
        raise LoopError(f"{holdout_path}: missing; run `dvc repro featurize`")
    holdout = pd.read_parquet(holdout_path)
    x, y = xy(holdout)
    scored = holdout[list(dict.fromkeys([*SEGMENT_COLUMNS, "pickup_hour", TARGET]))].copy()
    scored["champion"] = np.asarray(champion.predict(x), dtype=np.float64)
    scored["challenger"] = np.asarray(challenger.predict(x), dtype=np.float64)
    champ = RegressionMetrics(**regression_metrics(y, scored["champion"].to_numpy()))
    chall = RegressionMetrics(**regression_metrics(y, scored["challenger"].to_numpy()))
    mae_change = chall.mae / champ.mae - 1.0
    # The same trips resampled for both models: how far the change could move with other trips.
    interval = paired_change_interval(np.abs(scored["challenger"] - y), np.abs(scored["champion"] - y))
    # A fact for the report, not a gate: the decision to retrain was the trigger's (core/trigger.py).
    better = mae_change < 0
    month = challenger_card.reference_month
    relative = percent_with_interval(mae_change, interval, inside=True)
    verdict = (
        f"the challenger {'beats' if better else 'does not beat'} the champion on the {month} holdout: "
        f"MAE {chall.mae:.3f} vs {champ.mae:.3f} ({relative})"
    )
    comparison = Comparison(
        month=month,
        # Relative to the repository root (every autoops command's working directory): this file is
        # committed, and a runner's absolute path would make each rerun elsewhere a new commit.
        holdout=Holdout(
            path=Path(os.path.relpath(holdout_path)).as_posix(),
            sha256=file_sha256(holdout_path),
            rows=len(holdout),
        ),
        champion=Champion(
            version=champion_card.version,
            training_months=champion_card.training_months,
            metrics=champ,
            # What the champion scored when it was current: the baseline the drift is measured from.
            reference_holdout=champion_evaluation.reference_holdout,
            reference_month=champion_card.reference_month,
            current_month_metrics=champion_evaluation.current,
        ),
        challenger=Challenger(
            version=challenger_card.version,
            training_months=challenger_card.training_months,
            reference_month=challenger_card.reference_month,
            metrics=chall,
        ),
        change=Change(
            mae=round(chall.mae - champ.mae, 6),
            mae_relative=round(mae_change, 6),
            mae_relative_ci95=interval and Interval(**interval),
            rmse=round(chall.rmse - champ.rmse, 6),
            r2=round(chall.r2 - champ.r2, 6),
        ),
        challenger_better=bool(better),
        verdict=verdict,
        # Challenger vs champion per borough, hour band and vendor; segments it is worse on first.
        segments=[Segment.model_validate(row) for row in who_loses(scored)],
    )
    return comparison, scored


def write_evidence(
    comparison: Comparison,
    scored: pd.DataFrame,
    trigger_drift: Drift,
    trigger_predictions: dict[str, pd.DataFrame],
) -> None:
    """The files the report is built from, all small enough to commit on the retrain branch."""
    trigger_drift.write(LOOP_DRIFT)
    comparison.write(LOOP_COMPARISON)
    by_hour = pd.DataFrame(
        {
            "champion_reference_holdout_mae": mae_by_hour(trigger_predictions["holdout"], PREDICTION, TARGET),
            "champion_mae": mae_by_hour(scored, "champion", TARGET),
            "challenger_mae": mae_by_hour(scored, "challenger", TARGET),
        }
    ).reindex(range(24))
    by_hour.index.name = "hour"
    write_text(by_hour.round(4).reset_index().to_csv(index=False), ERROR_BY_HOUR)
    sample = scored.sample(n=min(SCATTER_POINTS, len(scored)), random_state=0)
    scatter = pd.DataFrame(
        {"actual": sample[TARGET], "champion": sample["champion"], "challenger": sample["challenger"]}
    )
    write_text(scatter.round(3).sort_values(["actual", "champion"]).to_csv(index=False), PRED_VS_ACTUAL)
    hist = pd.DataFrame({"bin_start_min": DURATION_BINS[:-1]})
    for label, frame in (("reference_share", "holdout"), ("current_share", "current")):
        counts, _ = np.histogram(trigger_predictions[frame][TARGET], bins=DURATION_BINS)
        hist[label] = (counts / max(1, counts.sum())).round(5)
    write_text(hist.to_csv(index=False), DURATION_HIST)
