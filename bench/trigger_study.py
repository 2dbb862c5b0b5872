"""Which signal should decide *when* to retrain? A study on real and synthetic months.

For one sequence of months this fits, once each, the model the pipeline would train on every
month (``M_t``) and the model trained on only the first weeks of each month (``E_t``), and scores
every model on every later month (and on each month's last weeks). From that matrix any retrain
policy can be replayed exactly and cheaply, so candidate signals and their thresholds are swept
in seconds; ``autoops backtest`` then confirms the winner end to end (with Evidently's drift).

Signals, each an estimate of "how much lower would the MAE be if we retrained now", computed
only from labels that have arrived (month t's labels, after month t was predicted):

* ``lagged``  - last month's challenger, scored out of time: 1 - MAE(M_{t-1}, t) / MAE(champion, t).
                The same comparison a retrain now would face next month, one month earlier.
* ``split``   - a time-ordered split inside the month: 1 - MAE(E_t, late t) / MAE(champion, late t).
* ``trend``   - the champion's error trend: MAE(champion, t) / MAE(champion, first month served) - 1.
* ``holdout`` - the shipped performance rule: MAE(champion, t) / champion's random-holdout MAE - 1.

    python -m bench.trigger_study --name real-2021 --source dir --months 2021-01,2021-02,...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from autoops.backtest import load_with_overrides
from autoops.backtest_data import SourceMonths
from stages.features import FEATURES, TARGET
from stages.featurize import split_holdout
from stages.params import Params
from stages.trigger import time_split

OUT_DIR = Path("bench/results")


def _mae(model: Any, frame: pd.DataFrame) -> float:
    pred = model.predict(frame[list(FEATURES)].to_numpy(dtype=np.float64))
    return float(np.mean(np.abs(pred - frame[TARGET].to_numpy(dtype=np.float64))))


def _fit_and_score(params: Params, month: str, frames: dict[str, pd.DataFrame], later: list[str]) -> dict:
    from threadpoolctl import threadpool_limits

    from stages.train import fit

    with threadpool_limits(1):
        frame = frames[month]
        train, holdout = split_holdout(frame, params.split.holdout_fraction, params.split.seed)
        full, _ = fit(params, train)
        early, late = time_split(frame, params.drift.late_fraction)
        split_model, _ = fit(params, early)
        out = {
            "month": month,
            "holdout_mae": _mae(full, holdout),
            "split": {"early_model_late_mae": _mae(split_model, late)},
            "mae": {},
            "late_mae": {},
        }
        for other in later:
            out["mae"][other] = _mae(full, frames[other])
            out["late_mae"][other] = _mae(full, time_split(frames[other], params.drift.late_fraction)[1])
    return out


def build_matrix(params: Params, months: list[str], jobs: int) -> dict[str, Any]:
    data = SourceMonths(params, Path(params.backtest.cache_dir))
    frames = {m: data.frame(m) for m in months}
    rows = Parallel(n_jobs=jobs)(
        delayed(_fit_and_score)(params, m, frames, months[i + 1 :]) for i, m in enumerate(months)
    )
    return {"months": months, "models": {r["month"]: r for r in rows}}


# ------------------------------------------------------------------------------------------------
# Replaying policies from the matrix


def _signal(kind: str, matrix: dict[str, Any], champion: str, deployed_at: int, step: int) -> float:
    months, models = matrix["months"], matrix["models"]
    month = months[step]
    champ = models[champion]
    if kind == "lagged":
        previous = months[step - 1]
        if previous == champion:
            return 0.0
        return 1.0 - models[previous]["mae"][month] / champ["mae"][month]
    if kind == "split":
        return 1.0 - models[month]["split"]["early_model_late_mae"] / champ["late_mae"][month]
    if kind == "trend":
        first = months[deployed_at + 1]
        return champ["mae"][month] / champ["mae"][first] - 1.0
    if kind == "holdout":
        return champ["mae"][month] / champ["holdout_mae"] - 1.0
    raise ValueError(kind)


def replay(matrix: dict[str, Any], rule: tuple[str, float] | int | None) -> dict[str, Any]:
    """``rule``: None = static, an int K = every K months, (signal, threshold) = a trigger."""
    months, models = matrix["months"], matrix["models"]
    champion, deployed_at, maes, retrains = months[0], 0, [], []
    for step in range(1, len(months)):
        month = months[step]
        maes.append(models[champion]["mae"][month])
        if rule is None:
            retrain = False
        elif isinstance(rule, int):
            retrain = step - deployed_at >= rule
        else:
            kind, threshold = rule
            retrain = _signal(kind, matrix, champion, deployed_at, step) > threshold
        if retrain:
            retrains.append(month)
            if step < len(months) - 1:
                champion, deployed_at = month, step
    return {"mean_mae": float(np.mean(maes)), "maes": maes, "retrains": retrains}


def frontier(matrix: dict[str, Any], thresholds: list[float]) -> dict[str, Any]:
    static = replay(matrix, None)
    every = replay(matrix, 1)
    lost = static["mean_mae"] - every["mean_mae"]

    def point(result: dict[str, Any]) -> dict[str, Any]:
        removed = (static["mean_mae"] - result["mean_mae"]) / lost if lost > 1e-12 else None
        return {
            "mean_mae": round(result["mean_mae"], 4),
            "degradation_removed": None if removed is None else round(removed, 4),
            "retrains": len(result["retrains"]),
            "retrain_months": result["retrains"],
        }

    calendar = {f"every_{k}": point(replay(matrix, k)) for k in range(1, 7)}
    calendar["static"] = point(static)
    triggers = {
        kind: {f"{t:.3f}": point(replay(matrix, (kind, t))) for t in thresholds}
        for kind in ("lagged", "split", "trend", "holdout")
    }
    return {"calendar": calendar, "triggers": triggers}


def dominated_by(calendar: dict[str, Any], point: dict[str, Any]) -> list[str]:
    """Calendar policies with no more retrains that remove more degradation than ``point``."""
    return [
        name
        for name, cal in calendar.items()
        if name != "static"
        and cal["retrains"] <= point["retrains"]
        and (cal["degradation_removed"] or 0) > (point["degradation_removed"] or 0) + 1e-9
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--months", help="comma-separated months (else the --from/--to range)")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    params = load_with_overrides(Path("params.yaml"), args.overrides)
    months = [m.strip() for m in args.months.split(",")] if args.months else None
    if months is None:
        from stages.months import month_range

        months = month_range(params.backtest.start, params.backtest.end)
    matrix = build_matrix(params, months, args.jobs)
    thresholds = [round(x, 3) for x in np.arange(-0.02, 0.1001, 0.005)]
    result = {"name": args.name, "matrix": matrix, **frontier(matrix, thresholds)}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / f"trigger_study_{args.name}.json").write_text(json.dumps(result, indent=1, sort_keys=True))
    cal = result["calendar"]
    print("calendar:", {k: (v["retrains"], v["degradation_removed"]) for k, v in cal.items()})
    for kind, points in result["triggers"].items():
        line = []
        for t, p in points.items():
            mark = "x" if dominated_by(cal, p) else ""
            line.append(f"{t}:{p['retrains']}/{p['degradation_removed']}{mark}")
        print(kind, " ".join(line))


if __name__ == "__main__":
    main()
