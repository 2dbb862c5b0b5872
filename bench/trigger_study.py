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

    python -m bench.trigger_study                      # real (needs ../shared/data/tlc) and synthetic
    python -m bench.trigger_study --source real        # one of them
    python -m bench.trigger_study --render             # only re-render bench/README.md

The sequences are bench/backtests.py's, so the study and the backtests judge the same months.
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
from bench.backtests import REAL_DIR, SEQUENCES
from bench.readme_block import fill_block
from core.feature_tables import split_holdout
from core.months import month_index, month_range
from core.params import Params
from core.training import fit
from core.trigger import mae, time_split

OUT_DIR = Path("bench/results")
README = Path("bench/README.md")


def _fit_and_score(params: Params, month: str, frames: dict[str, pd.DataFrame], later: list[str]) -> dict:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        frame = frames[month]
        train, holdout = split_holdout(frame, params.split.holdout_fraction, params.split.seed)
        full, _ = fit(params, train)
        early, late = time_split(frame, params.drift.late_fraction)
        split_model, _ = fit(params, early)
        out = {
            "month": month,
            "holdout_mae": mae(full, holdout),
            "split": {"early_model_late_mae": mae(split_model, late)},
            "mae": {},
            "late_mae": {},
        }
        for other in later:
            out["mae"][other] = mae(full, frames[other])
            out["late_mae"][other] = mae(full, time_split(frames[other], params.drift.late_fraction)[1])
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


def dominated(matrix: dict[str, Any], months: list[str], rule: tuple[str, float]) -> dict[str, Any]:
    """Replay ``rule`` on ``months`` and say which calendar (no more retrains, lower MAE) beats it."""
    view = {"months": months, "models": matrix["models"]}
    own = replay(view, rule)
    beaten_by = []
    for k in range(1, 7):
        cal = replay(view, k)
        if len(cal["retrains"]) <= len(own["retrains"]) and cal["mean_mae"] < own["mean_mae"] - 1e-9:
            beaten_by.append(k)
    return {"retrains": len(own["retrains"]), "mean_mae": round(own["mean_mae"], 4), "beaten_by_k": beaten_by}


SIGNALS = ("split", "lagged", "trend", "holdout")
THRESHOLDS = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06)


def study(matrix: dict[str, Any], sequences: dict[str, list[str]]) -> dict[str, Any]:
    return {
        signal: {
            f"{t:.2f}": {name: dominated(matrix, months, (signal, t)) for name, months in sequences.items()}
            for t in THRESHOLDS
        }
        for signal in SIGNALS
    }


BEGIN, END = "<!-- trigger-study:begin (python -m bench.trigger_study) -->", "<!-- trigger-study:end -->"


def render_block(results: dict[str, dict[str, Any]]) -> str:
    """One row per signal and threshold; a cell per sequence: retrains / mean MAE, and `beaten` if
    a calendar with no more retrains has a lower mean MAE."""
    names = [n for r in results.values() for n in next(iter(next(iter(r["study"].values())).values()))]
    lines = [
        BEGIN,
        "",
        "| signal | retrain at | " + " | ".join(f"`{n}`" for n in names) + " | sequences lost |",
        "|---|---:|" + "---:|" * len(names) + "---:|",
    ]
    for signal in SIGNALS:
        for t in THRESHOLDS:
            cells, lost = [], 0
            for r in results.values():
                for cell in r["study"][signal][f"{t:.2f}"].values():
                    beaten = bool(cell["beaten_by_k"])
                    lost += beaten
                    cells.append(f"{cell['retrains']} / {cell['mean_mae']:.3f}{' beaten' if beaten else ''}")
            lines.append(f"| {signal} | {t:.0%} | " + " | ".join(cells) + f" | {lost} |")
    return "\n".join([*lines, "", END])


def render(readme: Path = README) -> str:
    results = {p.stem: json.loads(p.read_text()) for p in sorted(OUT_DIR.glob("trigger_study_*.json"))}
    return fill_block(readme, BEGIN, END, render_block(results))


def main() -> None:

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["real", "synthetic"], action="append")
    parser.add_argument("--render", action="store_true", help="only re-render the README block")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    for source in [] if args.render else args.source or ["real", "synthetic"]:
        names = [n for n in SEQUENCES if n.startswith(source)]
        if source == "real" and not REAL_DIR.is_dir():
            print(f"real: skipped ({REAL_DIR} is absent)")
            continue
        overrides = SEQUENCES[names[0]][1]
        params = load_with_overrides(Path("params.yaml"), overrides)
        sequences = {
            n: SEQUENCES[n][2] or month_range(params.backtest.start, params.backtest.end) for n in names
        }
        every = sorted({m for months in sequences.values() for m in months}, key=month_index)
        matrix = build_matrix(params, every, args.jobs)
        result = {"source": source, "matrix": matrix, "study": study(matrix, sequences)}
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        path = OUT_DIR / f"trigger_study_{source}.json"
        path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(f"{source}: {path}")
    README.write_text(render())


if __name__ == "__main__":
    main()
