"""The backtest replay: months in order, as the scheduled workflow would have lived them.

At every month each policy's deployed model predicts the month; only then are the month's labels
revealed, the model scored, and the policy asked whether to retrain on it (the new model serves
from the next month on). The first month only bootstraps: every policy starts from the model
trained on it. Once the last month is scored, every month's model is scored on every later month
too, so autoops/backtest_hindsight.py can find the best any schedule could have done.

Speed comes from sharing, not from shortcuts: every model, score, drift check and expected gain is
computed once for all policies and cached (autoops/backtest_store.py), and the expensive steps run
in worker processes with one thread each (autoops/backtest_workers.py). The policies are
autoops/backtest_policy.py, the month data and the clock that guards it autoops/backtest_data.py.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoops.backtest_data import MissingMonthError, MonthData, SourceMonths, Timeline, build_month
from autoops.backtest_policy import Policy, decide
from autoops.backtest_store import ModelRef, Scores, Store
from autoops.backtest_workers import make_executor
from core.io import StageError
from core.months import month_index
from core.params import Params


@dataclass
class PolicyState:
    policy: Policy
    model: ModelRef
    trained_step: int
    records: list[dict[str, Any]] = field(default_factory=list)


# progress(phase, month, total): phase "load" (featurising months) or "replay", once per month done.
ProgressHook = Callable[[str, str, int], None]


def replay(
    months: list[str],
    policies: list[Policy],
    params: Params,
    data: MonthData,
    *,
    cache_dir: Path | None = None,
    jobs: int = 1,
    progress: ProgressHook | None = None,
    on_predicted: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Replay ``months`` under each policy; returns per-policy, per-month records, counters and
    every serving model's MAE on every later month (``hindsight_mae``, for the hindsight limit).

    ``on_predicted(month)`` is called once every policy's model has predicted ``month`` and before
    any of its labels are read (tests use it to change the labels at exactly that moment).
    """
    _check_months(months)
    progress = progress or (lambda phase, month, total: None)
    timeline = Timeline(data, on_predicted)
    with _cache_root(cache_dir) as root, make_executor(jobs) as executor:
        store = Store(params, data, timeline, executor, root)
        _load(store, months, progress)
        states = _bootstrap(store, months[0], policies)
        progress("replay", months[0], len(months))
        for step, month in enumerate(months[1:], start=1):
            _replay_month(store, states, step, month, last=step == len(months) - 1)
            progress("replay", month, len(months))
        # With every label in, score the models on the months no policy deployed them on.
        hindsight = store.hindsight(months)
        for ref in store.models.values():
            ref.ready()
        return {**_results(store, states), "hindsight_mae": hindsight}


def _check_months(months: list[str]) -> None:
    if len(months) < 2:
        raise StageError("a backtest needs at least two months: one to train on, one to predict")
    if sorted(months, key=month_index) != months or len(set(months)) != len(months):
        raise StageError(f"months must be distinct and in order: {', '.join(months)}")


def _load(store: Store, months: list[str], progress: ProgressHook) -> None:
    """Every month the replay reads (the replayed ones and the training windows' history): fail
    before any work if one is missing, then featurise those not cached yet."""
    needed = sorted({m for month in months[:-1] for m in store.window(month)} | set(months), key=month_index)
    check_available(store.data, months, needed, store.params)
    _prefetch(store.data, needed, store.executor, progress)


def _prefetch(data: MonthData, months: list[str], executor: Executor, progress: ProgressHook) -> None:
    """Featurise the months not cached yet in parallel (only for the built-in source)."""
    if not isinstance(data, SourceMonths):
        return
    todo = [m for m in months if not data.cached(m)]
    futures = {m: executor.submit(build_month, m, data.params) for m in todo}
    for month in todo:
        data.put(month, futures[month].result())
        progress("load", month, len(todo))


def _bootstrap(store: Store, month: str, policies: list[Policy]) -> list[PolicyState]:
    """Step 0: the first month is history every policy starts from (its model, nothing deployed)."""
    store.timeline.advance(month)
    store.timeline.reveal(month, predicted=False)
    first = store.model(month)
    states = [PolicyState(p, first, 0) for p in policies]
    for state in states:
        state.records.append(
            {
                "month": month,
                "step": 0,
                "model": None,
                "retrain": True,
                "bootstrap": True,
                "reason": f"bootstrap: the first model learns {first.label}; nothing was deployed yet",
            }
        )
    return states


def _replay_month(store: Store, states: list[PolicyState], step: int, month: str, *, last: bool) -> None:
    """One month: every deployed model predicts and is scored, every policy decides, retrains land."""
    store.timeline.advance(month)
    deployed = {s.model.trained_on: s.model for s in states}
    drift_for = {s.model.trained_on for s in states if s.policy.needs_drift}
    refs = sorted(deployed.values(), key=lambda r: month_index(r.trained_on))
    scores = store.score(refs, drift_for, month)
    if not last:
        # periodic_k1 retrains every month: start that fit now, beside the challenger's.
        store.model(month)
    gain_for = {s.model.trained_on for s in states if s.policy.needs_gain}
    gains = store.gains([deployed[m] for m in sorted(gain_for, key=month_index)], month)
    for state in states:
        gain = gains.get(state.model.trained_on) if state.policy.needs_gain else None
        state.records.append(_decide(state, step, month, scores[state.model.trained_on], gain, store.params))
    # The model trained on the last month would serve only after the replay ends: its decision
    # counts (it is what production would pay), its fit is skipped.
    if not last and any(state.records[-1]["retrain"] for state in states):
        new = store.model(month)
        for state in states:
            if state.records[-1]["retrain"]:
                state.model, state.trained_step = new, step


def _decide(
    state: PolicyState, step: int, month: str, score: Scores, gain: dict[str, Any] | None, params: Params
) -> dict[str, Any]:
    """The policy's decision at ``month`` and the figures it saw: one record of the results."""
    ref = state.model
    age = step - state.trained_step
    reference_mae = ref.reference["holdout"]["mae"]
    retrain, reason, perf = decide(
        state.policy, age, reference_mae, score.metrics["mae"], score.drift, gain, params.drift
    )
    record: dict[str, Any] = {
        "month": month,
        "step": step,
        "model": ref.label,
        "model_age": age,
        "mae": score.metrics["mae"],
        "rmse": score.metrics["rmse"],
        "r2": score.metrics["r2"],
        "reference_mae": reference_mae,
        "mae_change": perf["mae_change"],
        "performance_drift": perf["performance_drift"],
    }
    if state.policy.needs_drift and score.drift is not None:
        record["data_drift"] = score.drift["data_drift"]
        record["drifted_share"] = score.drift["drifted_share"]
    if gain is not None:
        record["expected_gain"] = gain["expected_gain"]
    record["retrain"] = retrain
    record["reason"] = reason
    return record


def _results(store: Store, states: list[PolicyState]) -> dict[str, Any]:
    counters = {
        "fits": store.fits,
        "challenger_fits": store.challengers,
        "scored": store.scored,
        "drift_checks": store.drift_checks,
    }
    models = {
        ref.label: {"window": ref.window, "reference_mae": ref.reference["holdout"]["mae"]}
        for ref in store.models.values()
    }
    return {"policies": {s.policy.name: s.records for s in states}, "models": models, "work": counters}


def check_available(data: MonthData, months: list[str], needed: list[str], params: Params) -> None:
    """Fail before any work, naming every missing month and what to do about it."""
    missing = data.missing(needed)
    if not missing:
        return
    replayed = [m for m in missing if m in months]
    history = [m for m in missing if m not in months]
    parts = []
    if replayed:
        parts.append(f"month{'s' if len(replayed) > 1 else ''} {', '.join(replayed)} not available")
    if history:
        parts.append(
            f"{', '.join(history)} not available but needed by months.train_window="
            f"{params.months.train_window} (a model trained on a month learns from the "
            f"{params.months.train_window} calendar months ending there)"
        )
    where = getattr(data, "where", "the data source")
    message = f"backtest: {'; '.join(parts)} in {where}"
    inventory = getattr(data, "inventory", None)
    if callable(inventory):
        have = inventory()
        message += f" (it has: {', '.join(have) if have else 'no green_tripdata_YYYY-MM.parquet files'})"
        usable = [m for m in months if m in have]
        if len(usable) >= 2 and replayed:
            message += f". Replay only the months that exist with --months {','.join(usable)}"
    raise MissingMonthError(message)


@contextmanager
def _cache_root(cache_dir: Path | None) -> Iterator[Path]:
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        yield cache_dir
        return
    # No cache asked for: workers still exchange models through files, in a folder that goes away.
    with tempfile.TemporaryDirectory(prefix="autoops-backtest-") as tmp:
        yield Path(tmp)
