"""The retrain decision: would a retrain lower next month's MAE by enough to be worth it?

The question is answered with the labels that just arrived, out of time, the way next month will
judge the retrained model: the month is cut in time, a challenger is fitted on its first weeks
(the same model and hyper-parameters as ``train``), and both it and the serving champion predict
the month's last ``late_fraction`` of trips. ``expected_gain = 1 - MAE(challenger) / MAE(champion)``
on those trips. Why this signal and not another: bench/README.md, "Which signal decides"
(`python -m bench.trigger_study`). In short: on real months it tracks what a retrain buys the next
month closely (including the months where retraining *hurts*, such as a December whose last week
is the holidays), where the champion's random-holdout MAE is ~7% optimistic and its error trend
mixes up "this month is harder" with "the model is stale".

The estimate carries a paired bootstrap 95% interval over the late trips
(``expected_gain_ci95``, core/bootstrap.py), so a reviewer sees how much the figure could move
with other trips. The decision uses the point estimate, as the backtests measured it; the backtest
itself (``gain_record`` alone) skips the interval, which no policy reads.

One decision, used by the drift stage, ``autoops check``/``propose`` and the backtest:
retrain when Evidently sees data drift (abrupt change) or when ``expected_gain`` reaches
``drift.min_retrain_gain`` - unless the month failed a blocking data check (core/data_checks.py):
a broken feed is not a changed world, and a retrain on it would learn the fault. Such a month is
never a retrain, whatever drift and gain say, until a person accepts its data
(``data_checks.accepted_months``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.bootstrap import interval_text, paired_change_interval, percent_with_interval
from core.features import FEATURES, PICKUP_TIME, TARGET
from core.io import StageError, iter_row_groups, open_parquet, read_rows
from core.model import predict
from core.params import Params
from core.scoring import scorer
from core.training import fit, sample_frame, sample_positions

# Below this many trips on either side of the cut, the estimate is noise: say so instead.
MIN_SPLIT_ROWS = 200
log = logging.getLogger(__name__)


def time_split(frame: pd.DataFrame, late_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The month's trips before and from the ``1 - late_fraction`` quantile of pickup time."""
    if PICKUP_TIME not in frame:
        raise StageError(f"the month's features have no {PICKUP_TIME} column; rerun `dvc repro featurize`")
    late, _ = late_mask(frame[PICKUP_TIME].to_numpy(dtype="datetime64[us]").astype(np.int64), late_fraction)
    return frame[~late], frame[late]


def late_mask(ticks: np.ndarray, late_fraction: float) -> tuple[np.ndarray, int]:
    """Which trips (pickup times as int64 microseconds) are in the late part, and the cut.

    Sorting the raw int64 is exact and independent of pandas' quantile interpolation.
    """
    order = np.sort(ticks)
    cut = int(order[min(len(order) - 1, int(len(order) * (1.0 - late_fraction)))])
    return ticks >= cut, cut


def abs_errors(model: Any, frame: pd.DataFrame) -> np.ndarray:
    """The model's absolute error on each trip of ``frame``, in its order."""
    pred = predict(model, frame[list(FEATURES)].to_numpy(dtype=np.float64))
    return np.abs(pred - frame[TARGET].to_numpy(dtype=np.float64))


def mae(model: Any, frame: pd.DataFrame) -> float:
    return float(np.mean(abs_errors(model, frame)))


def fit_challenger(
    frame: pd.DataFrame, params: Params, month: str
) -> tuple[Any, dict[str, Any], pd.DataFrame]:
    """The challenger fitted on ``month``'s first weeks, what it scored on the last ones, and
    those last trips (for scoring the champion on the same rows)."""
    early, late = time_split(frame, params.drift.late_fraction)
    if min(len(early), len(late)) < MIN_SPLIT_ROWS:
        raise StageError(
            f"{month}: {len(frame)} trips are too few to estimate what a retrain buys "
            f"(need {MIN_SPLIT_ROWS} on each side of the time cut)"
        )
    # The same bounded, deterministic sample as the train stage takes of a big month.
    early = sample_frame(early, params.train.max_rows, params.train.seed)
    challenger, seconds = fit(params, early)
    facts = {
        "month": month,
        "challenger_late_mae": round(mae(challenger, late), 6),
        "early_rows": len(early),
        "late_rows": len(late),
        "cut": pd.Timestamp(late[PICKUP_TIME].min()).strftime("%Y-%m-%d %H:%M"),
    }
    # The fit time is logged, not returned: the facts land in drift.json, whose bytes must not vary.
    log.info("%s: challenger fitted on %d trips in %.1f s", month, len(early), seconds)
    return challenger, facts, late


def gain_record(challenger: dict[str, Any], champion_late_mae: float, min_gain: float) -> dict[str, Any]:
    """The estimate for one champion, from :func:`fit_challenger`'s facts."""
    return {
        **challenger,
        "champion_late_mae": round(champion_late_mae, 6),
        "expected_gain": round(1.0 - challenger["challenger_late_mae"] / champion_late_mae, 6),
        "min_retrain_gain": min_gain,
    }


def with_interval(
    gain: dict[str, Any], challenger_errors: np.ndarray, champion_errors: np.ndarray
) -> dict[str, Any]:
    """``gain`` with the paired bootstrap 95% interval of ``expected_gain`` over the same late trips.

    ``expected_gain = 1 - MAE(challenger) / MAE(champion)`` is minus the relative MAE change, so
    its interval is the change's, negated and swapped.
    """
    change = paired_change_interval(challenger_errors, champion_errors)
    if change is None:
        return {**gain, "expected_gain_ci95": None}
    interval = {**change, "low": round(-change["high"], 6), "high": round(-change["low"], 6)}
    return {**gain, "expected_gain_ci95": interval}


def estimate_gain(champion: Any, frame: pd.DataFrame, params: Params, month: str) -> dict[str, Any]:
    """What a retrain on ``month`` should buy the ``champion``'s successor next month."""
    challenger, facts, late = fit_challenger(frame, params, month)
    champion_errors = abs_errors(champion, late)
    gain = gain_record(facts, float(np.mean(champion_errors)), params.drift.min_retrain_gain)
    return with_interval(gain, abs_errors(challenger, late), champion_errors)


def estimate_gain_from_file(champion: Any, path: Path, params: Params, month: str) -> dict[str, Any]:
    """:func:`estimate_gain` on a features file of any size, in bounded memory, with the same result.

    Only the pickup times (8 bytes a row), the challenger's training sample (at most
    ``train.max_rows``) and one row group at a time are in memory.
    """
    handle = open_parquet(path)
    if PICKUP_TIME not in handle.schema_arrow.names:
        raise StageError(f"the month's features have no {PICKUP_TIME} column; rerun `dvc repro featurize`")
    times = read_rows(path, None, columns=[PICKUP_TIME]).column(0).to_numpy().astype("datetime64[us]")
    ticks = times.astype(np.int64)
    del times
    late, cut = late_mask(ticks, params.drift.late_fraction)
    del ticks
    early_positions = np.flatnonzero(~late)
    n_late = int(late.sum())
    if min(len(early_positions), n_late) < MIN_SPLIT_ROWS:
        raise StageError(
            f"{month}: {len(late)} trips are too few to estimate what a retrain buys "
            f"(need {MIN_SPLIT_ROWS} on each side of the time cut)"
        )
    sample = sample_positions(len(early_positions), params.train.max_rows, params.train.seed)
    fit_positions = early_positions if sample is None else early_positions[sample]
    early = read_rows(path, fit_positions, columns=[*FEATURES, TARGET]).to_pandas()
    challenger, seconds = fit(params, early)
    log.info("%s: challenger fitted on %d trips in %.1f s", month, len(early), seconds)
    del early
    errors: dict[str, list[np.ndarray]] = {"challenger": [], "champion": []}
    # Compiled trees when there is a library (or a big enough month to build one), as in evaluate.
    scorers = {
        name: scorer(model, n_late, name)
        for name, model in (("challenger", challenger), ("champion", champion))
    }
    start = 0
    for table in iter_row_groups(path, columns=[*FEATURES, TARGET]):
        mask = late[start : start + table.num_rows]
        start += table.num_rows
        if not mask.any():
            continue
        frame = table.to_pandas()[mask]
        x, y = frame[list(FEATURES)].to_numpy(dtype=np.float64), frame[TARGET].to_numpy(dtype=np.float64)
        for name, model in scorers.items():
            errors[name].append(np.abs(predict(model, x) - y))
    for checked in scorers.values():
        checked.log_parity()
    facts = {
        "month": month,
        "challenger_late_mae": round(float(np.mean(np.concatenate(errors["challenger"]))), 6),
        "early_rows": len(fit_positions),
        "late_rows": n_late,
        "cut": pd.Timestamp(np.datetime64(int(cut), "us")).strftime("%Y-%m-%d %H:%M"),
    }
    champion_errors = np.concatenate(errors["champion"])
    gain = gain_record(facts, float(np.mean(champion_errors)), params.drift.min_retrain_gain)
    return with_interval(gain, np.concatenate(errors["challenger"]), champion_errors)


def gain_sentence(gain: dict[str, Any]) -> str:
    """What the estimate says and what it rests on, in words a reviewer can check.

    With an interval (``expected_gain_ci95``): "by about 82.0% (95% CI 81.2 to 82.8)".
    """
    value, interval = gain["expected_gain"], gain.get("expected_gain_ci95")
    if value >= 0:
        about = percent_with_interval(value, interval, signed=False)
        outlook = f"a retrain should lower next month's MAE by about {about}"
    else:
        worse = {**interval, "low": -interval["high"], "high": -interval["low"]} if interval else None
        ci = f"; {interval_text(worse, signed=False)}" if worse else ""
        outlook = f"a retrain should not lower next month's MAE (about {-value:.1%} worse{ci})"
    return (
        f"{outlook} (a model fitted "
        f"on {gain['month']} before {gain['cut']}, {gain['early_rows']:,} trips, vs the champion on the "
        f"{gain['late_rows']:,} trips after it: MAE {gain['challenger_late_mae']:.3f} vs "
        f"{gain['champion_late_mae']:.3f})"
    )


def _drift_sentence(data: dict[str, Any]) -> str:
    share = f"{len(data['drifted_columns'])} of {data['n_columns']} columns drifted"
    if data["data_drift"]:
        return (
            f"data drift: {share} (share {data['drifted_share']:.2f} >= {data['drift_share_threshold']}: "
            f"{', '.join(data['drifted_columns'])})"
        )
    return f"no data drift: {share} (share {data['drifted_share']:.2f} < {data['drift_share_threshold']})"


def data_problem(checks: dict[str, Any] | None) -> str | None:
    """The one line that stops a retrain (``data problem in <month>: ...``), or None.

    ``checks`` is the data checks' result (reports/metrics/data_checks.json); a month a person
    accepted (``data_checks.accepted_months``) has no problem that blocks.
    """
    if checks is None or checks["passed"] or checks["accepted"]:
        return None
    return checks["problem"]


def decide(
    data: dict[str, Any] | None,
    gain: dict[str, Any] | None,
    min_gain: float,
    checks: dict[str, Any] | None = None,
) -> tuple[bool, str]:
    """Retrain or not, and the one reason: a data problem (never), data drift, or a big enough
    expected gain.

    ``data`` (Evidently's summary) or ``gain`` may be None for the policies that use one signal;
    ``checks`` (the data checks' result) None where the month's raw data was not checked.
    """
    if problem := data_problem(checks):
        return False, problem
    reasons, calm = [], []
    if data is not None:
        (reasons if data["data_drift"] else calm).append(_drift_sentence(data))
    if gain is not None:
        enough = gain["expected_gain"] >= min_gain
        threshold = f"{'>=' if enough else '<'} {min_gain:.0%}"
        (reasons if enough else calm).append(f"{gain_sentence(gain)}, {threshold}")
    accepted = checks is not None and checks["accepted"] and not checks["passed"]
    note = f" (data problems accepted by a person: {checks['problem']})" if accepted else ""
    if reasons:
        return True, "retrain recommended: " + "; ".join(reasons) + note
    return False, "no retrain needed: " + "; ".join(calm) + note
