"""The hindsight limit: the lowest mean MAE any retrain schedule reaches with at most k retrains.

Knowing every month's labels in advance, which months should one have retrained on? The replay
already holds the answer's ingredients: every month's model scored on every later month
(``Store.hindsight``). From that matrix a dynamic programme finds, for each budget k, the best
schedule exactly, so a trigger's **regret** (its mean MAE above the best schedule with as many
retrains as it paid) says how much better any trigger could possibly have done. No policy can be
below the limit, and a trigger reaches it only when it happens to pick the best months without
seeing their labels: the regret bounds what a better trigger could still win with as many
retrains.

Timing, exactly as the replay (autoops/backtest_engine.py) lives it, with step i = ``months[i]``:

* the model trained at step i learns from the ``months.train_window`` calendar months ending at
  ``months[i]`` (its labels are read once step i has been predicted) and is first deployed at step
  i + 1, the next replayed month however far away it is;
* step 0 only bootstraps: its model serves from step 1 on until the first retrain; a retrain at
  step r (1 <= r <= n - 2) deploys the model trained at r from step r + 1 on;
* a retrain at the last step (n - 1) is counted (the replay counts every decision, as production
  would pay for it) but its model never serves: the frontier is flat from n - 2 to n - 1 retrains;
* mean MAE is over steps 1..n - 1, the months something was deployed, as ``summarize`` averages.

So ``static`` is the k = 0 point (the one schedule with no retrain), and ``periodic_k1`` (n - 1
retrains) has the MAE of the k = n - 2 schedule that retrains at every step that can serve; the
frontier there is at most that, lower when skipping a month would have helped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# mae[trained_on][month]: the model trained at replay month ``trained_on`` scored on ``month``.
ScoreMatrix = Mapping[str, Mapping[str, float]]


def schedule_mae(months: list[str], mae: ScoreMatrix, retrain_on: Iterable[str]) -> float:
    """The mean MAE over steps 1..n-1 of the schedule that retrains on ``retrain_on``."""
    retrains = set(retrain_on)
    deployed, total = months[0], 0.0
    for month in months[1:]:
        total += mae[deployed][month]
        if month in retrains:
            deployed = month
    return total / (len(months) - 1)


def frontier(months: list[str], mae: ScoreMatrix) -> list[dict[str, Any]]:
    """For k = 0..n-1 retrains: the best mean MAE with at most k, and the months of one such schedule.

    ``best[i][k]`` is the lowest total MAE over steps i+1..n-1 once the model trained at step i
    serves from i+1, with at most k further retrains: either it serves to the end, or it serves
    until a first retrain at some step r and the rest is ``best[r][k-1]``. O(n^3), from the matrix
    alone (nothing is fitted or scored here). Ties go to the schedule found first: fewer retrains,
    then the earlier one.
    """
    n = len(months)
    if n < 2:
        raise ValueError("the hindsight limit needs at least two months")
    last = n - 1
    served = [[0.0] * n for _ in range(n)]  # served[i][r]: total MAE of model i over steps i+1..r
    for i in range(last):
        for r in range(i + 1, n):
            served[i][r] = served[i][r - 1] + mae[months[i]][months[r]]
    # Only a retrain at a step that can serve (1..n-2) changes anything.
    budgets = range(max(last - 1, 0) + 1)
    best: list[list[float]] = [[0.0] * len(budgets) for _ in range(n)]
    first: list[list[int | None]] = [[None] * len(budgets) for _ in range(n)]
    for i in range(last - 1, -1, -1):
        for k in budgets:
            best[i][k], first[i][k] = served[i][last], None
            if k == 0:
                continue
            for r in range(i + 1, last):
                total = served[i][r] + best[r][k - 1]
                if total < best[i][k]:
                    best[i][k], first[i][k] = total, r
    points = []
    for k in range(n):
        budget = min(k, budgets[-1])
        schedule, i, left = [], 0, budget
        while (r := first[i][left]) is not None:
            schedule.append(months[r])
            i, left = r, left - 1
        points.append({"retrains": k, "mean_mae": best[0][budget] / last, "retrain_months": schedule})
    return points


def regret(point: Mapping[str, Any], limit: list[dict[str, Any]]) -> dict[str, Any]:
    """A policy's mean MAE above the best schedule with no more retrains than it paid."""
    best = limit[min(point["retrains"], len(limit) - 1)]
    gap = point["mean_mae"] - best["mean_mae"]
    # A policy that follows the best schedule differs from it by summation order alone: say 0, not
    # -0.000. A larger negative gap would be a bug (tests/test_backtest.py would see it).
    gap = 0.0 if abs(gap) < 1e-9 else gap
    return {
        "retrains": point["retrains"],
        "mean_mae": round(point["mean_mae"], 4),
        "limit_mae": round(best["mean_mae"], 4),
        "limit_retrain_months": best["retrain_months"],
        "regret": round(gap, 4),
        "regret_pct": round(gap / best["mean_mae"], 4),
    }


def hindsight(
    months: list[str], mae: ScoreMatrix, summary: Mapping[str, Mapping[str, Any]], records: Mapping[str, Any]
) -> dict[str, Any]:
    """The frontier, every policy's regret against it, and the matrix it came from.

    A policy's regret is computed from its own replayed MAEs (``records``), unrounded; the matrix
    reproduces them (tests/test_backtest.py checks it), so the gap is the schedule's, not noise.
    """
    limit = frontier(months, mae)
    out = {}
    for name, s in summary.items():
        rows = [r for r in records[name] if not r.get("bootstrap")]
        out[name] = regret(
            {"retrains": s["retrains"], "mean_mae": sum(r["mae"] for r in rows) / len(rows)}, limit
        )
    return {
        "frontier": [{**p, "mean_mae": round(p["mean_mae"], 4)} for p in limit],
        "regret": out,
        "mae": {m: dict(row) for m, row in mae.items()},
    }
