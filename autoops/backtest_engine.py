"""The backtest replay: months in order, as the scheduled workflow would have lived them.

At every month each policy's deployed model predicts the month; only then are the month's labels
revealed, the model scored, and the policy asked whether to retrain on it (the new model serves
from the next month on). The first month only bootstraps: every policy starts from the model
trained on it.

Speed comes from sharing, not from shortcuts: a model is a pure function of its training window
(content-hashed), so "the model trained on 2024-05" is fitted once however many policies retrain
there, and scoring model X on month Y (and its Evidently drift check) is done once however many
policies deploy X at Y. Results are cached on disk under ``.cache/backtest/`` keyed on data
hashes, params and code, and the expensive steps run in worker processes with one thread each
(OpenMP with more threads than free cores slows HistGradientBoosting down many times over on a
shared machine).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from autoops.backtest_data import MissingMonthError, MonthData, SourceMonths, build_month, code_digest, digest
from stages.drift import compute_drift, performance_drift
from stages.evaluate import PREDICTION, with_predictions
from stages.features import FEATURES, TARGET
from stages.host import usable_cpus
from stages.io import StageError, atomic_dir, write_json, write_parquet
from stages.metrics import regression_metrics
from stages.model import MODEL_FILE, load_model, predict, save_model
from stages.months import month_index
from stages.params import DriftParams, MonthParams, Params, policy_spec
from stages.trigger import decide as trigger_decision
from stages.trigger import fit_challenger, gain_record, mae, time_split

PolicyKind = Literal["static", "periodic", "data_drift", "performance", "auto"]
BASELINE = "periodic_k1"
STATIC = "static"
# The calendar frontier: retrain every K months for K = 1..6, always replayed so that any trigger
# is judged against the habit it must beat at the same number of retrains.
CALENDAR = tuple(range(1, 7))
MODEL_CODE = ("stages.model", "stages.train", "stages.featurize", "stages.features")
GAIN_CODE = (*MODEL_CODE, "stages.trigger")
DRIFT_CODE = ("stages.drift",)
# One thread per worker: the workers are the parallelism, and see the module docstring.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
HOLDOUT_FILE = "holdout.parquet"
REFERENCE_FILE = "reference.json"


class LookAheadError(RuntimeError):
    """The replay tried to read data of a month it has not reached (a bug, never user error)."""


# ------------------------------------------------------------------------------------------------
# Policies


@dataclass(frozen=True)
class Policy:
    name: str
    kind: PolicyKind
    every: int = 0  # periodic only

    @property
    def needs_drift(self) -> bool:
        return self.kind in ("data_drift", "auto")

    @property
    def needs_gain(self) -> bool:
        return self.kind == "auto"

    @property
    def description(self) -> str:
        return {
            "static": "train once on the first month, never retrain",
            "periodic": f"retrain every {self.every} month{'s' if self.every > 1 else ''}",
            "data_drift": "retrain when Evidently's data-drift verdict fires (drift.drift_share)",
            "performance": "retrain when MAE exceeds the reference MAE by drift.performance_threshold",
            "auto": "the product's trigger: data drift OR expected retrain gain (stages.trigger.decide)",
        }[self.kind]


def parse_policies(specs: list[str], periodic_every: int) -> list[Policy]:
    """Policies from specs (``static``, ``periodic``, ``periodic:K``, ``data_drift``, ...).

    ``static`` and the calendar ``periodic_k1``..``periodic_k6`` are always included: degradation
    is measured against ``periodic_k1`` and its reduction against ``static``, and a trigger means
    something only next to the calendar it must beat.
    """
    policies: dict[str, Policy] = {STATIC: Policy(STATIC, "static")}
    for k in CALENDAR:
        policies[f"periodic_k{k}"] = Policy(f"periodic_k{k}", "periodic", k)
    for spec in specs:
        try:
            kind, every = policy_spec(spec)
        except ValueError as exc:
            raise StageError(str(exc)) from exc
        if kind == "periodic":
            name = f"periodic_k{every}" if every else "periodic"
            policy = Policy(name, "periodic", every or periodic_every)
        else:
            policy = Policy(kind, kind)  # type: ignore[arg-type]
        policies.setdefault(policy.name, policy)
    return list(policies.values())


def decide(
    policy: Policy,
    age: int,
    reference_mae: float,
    mae: float,
    drift: dict[str, Any] | None,
    gain: dict[str, Any] | None,
    params: DriftParams,
) -> tuple[bool, str, dict[str, Any]]:
    """Retrain or not, why, and the performance-drift figures (shared by every policy's record)."""
    evaluation = {"reference_holdout": {"mae": reference_mae}, "current": {"mae": mae}}
    perf = performance_drift(evaluation, params.performance_threshold)
    if policy.kind == "static":
        return False, "static: never retrains", perf
    if policy.kind == "periodic":
        if age >= policy.every:
            return True, f"periodic: the model has served {age} month(s) (retrain every {policy.every})", perf
        return False, f"periodic: the model has served {age} of {policy.every} month(s)", perf
    if policy.kind == "performance":
        change = f"MAE {mae:.3f} vs reference {reference_mae:.3f} ({perf['mae_change']:+.1%}"
        if perf["performance_drift"]:
            return True, f"performance drift: {change} > {params.performance_threshold:+.0%})", perf
        return False, f"no performance drift: {change} <= {params.performance_threshold:+.0%})", perf
    assert drift is not None
    # data_drift and auto are the product's own decision, with data drift alone or with the gain.
    retrain, reason = trigger_decision(drift, gain if policy.needs_gain else None, params.min_retrain_gain)
    return retrain, reason, perf


# ------------------------------------------------------------------------------------------------
# The clock: no month's data before its time


class Timeline:
    """Hands out month data only when the replay has reached it (labels: once predicted).

    Features of the current month are needed to predict it; its labels exist only after that.
    Months before the current one (including history before the first replayed month, which
    training windows may reach back into) are the past and always readable.
    """

    def __init__(self, data: MonthData, on_predicted: Callable[[str], None] | None = None) -> None:
        self._data = data
        self._on_predicted = on_predicted
        self._now: str | None = None
        self._revealed: set[str] = set()

    @property
    def now(self) -> str:
        if self._now is None:
            raise LookAheadError("the replay has not started")
        return self._now

    def advance(self, month: str) -> None:
        if self._now is not None and month_index(month) <= month_index(self._now):
            raise LookAheadError(f"months must be replayed in order: {month} after {self._now}")
        self._now = month

    def reveal(self, month: str, *, predicted: bool = True) -> None:
        """Make ``month``'s labels readable; ``predicted=False`` only for the bootstrap month."""
        if month != self.now:
            raise LookAheadError(f"cannot reveal {month} while replaying {self.now}")
        if predicted and self._on_predicted is not None:
            self._on_predicted(month)
        self._revealed.add(month)

    def features(self, month: str) -> pd.DataFrame:
        if month_index(month) > month_index(self.now):
            raise LookAheadError(f"features of {month} requested while replaying {self.now}")
        return self._data.features(month)

    def check_labels(self, month: str) -> None:
        past = month_index(month) < month_index(self.now)
        if not (past or month in self._revealed):
            raise LookAheadError(f"labels of {month} requested before {month} was predicted (now {self.now})")

    def labels(self, month: str) -> np.ndarray:
        self.check_labels(month)
        return self._data.labels(month)

    def labelled(self, month: str) -> pd.DataFrame:
        """Features + target + month, the shape ``stages.featurize`` gives the training window."""
        frame = self.features(month).copy()
        frame[TARGET] = self.labels(month)
        frame["month"] = month
        return frame


# ------------------------------------------------------------------------------------------------
# Work done in worker processes (module-level functions so they pickle)


def fit_model(params: Params, window: pd.DataFrame, out_dir: str) -> dict[str, Any]:
    """Train exactly as the pipeline does (featurize's holdout split, train's fit) into ``out_dir``."""
    from stages.featurize import split_holdout
    from stages.train import fit

    train, holdout = split_holdout(window, params.split.holdout_fraction, params.split.seed)
    model, seconds = fit(params, train)
    holdout = with_predictions(model, holdout)
    reference = {
        "holdout": regression_metrics(holdout[TARGET].to_numpy(), holdout[PREDICTION].to_numpy()),
        "training_rows": len(train),
        "fit_seconds": round(seconds, 3),
    }
    with atomic_dir(out_dir) as tmp:
        save_model(model, tmp / MODEL_FILE)
        # The drift reference: the holdout's features and the model's predictions on them.
        reference_frame = holdout[[*FEATURES, PREDICTION]]
        write_parquet(pa.Table.from_pandas(reference_frame, preserve_index=False), tmp / HOLDOUT_FILE)
        write_json(reference, tmp / REFERENCE_FILE)
    return reference


def score_month(
    model_dir: str, features: pd.DataFrame, drift: DriftParams | None
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The deployed model's predictions on a month and, if asked, Evidently's drift summary."""
    model = load_model(Path(model_dir) / MODEL_FILE)
    predictions = predict(model, features[list(FEATURES)].to_numpy(dtype=np.float64))
    if drift is None:
        return predictions, None
    reference = pq.read_table(Path(model_dir) / HOLDOUT_FILE).to_pandas()
    current = features[list(FEATURES)].copy()
    current[PREDICTION] = predictions
    with warnings.catch_warnings():
        # scipy's chi-square warns on categories one side lacks; Evidently handles them, and a
        # screenful of identical warnings per month would bury the progress bar.
        warnings.simplefilter("ignore", RuntimeWarning)
        summary, _ = compute_drift(reference, current, drift)
    keep = ("data_drift", "drifted_share", "drifted_columns", "n_columns", "drift_share_threshold")
    return predictions, {k: summary[k] for k in (*keep, "prediction_drift")}


def split_gains(
    model_dirs: list[str], frame: pd.DataFrame, params: Params, month: str, facts_file: str
) -> dict[str, dict[str, Any]]:
    """The trigger's estimate at ``month`` for each deployed model: one challenger, fitted once."""
    path = Path(facts_file)
    if path.exists():
        facts = json.loads(path.read_text())
        _, late = time_split(frame, params.drift.late_fraction)
    else:
        _, facts, late = fit_challenger(frame, params, month)
        write_json(facts, path)
    min_gain = params.drift.min_retrain_gain
    return {d: gain_record(facts, mae(load_model(Path(d) / MODEL_FILE), late), min_gain) for d in model_dirs}


class InlineExecutor(Executor):
    """Runs each task at once in this process (jobs=1), one thread, like a worker would."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        from threadpoolctl import threadpool_limits

        future: Future[Any] = Future()
        try:
            with threadpool_limits(1):
                future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # delivered through the future, as a pool would
            future.set_exception(exc)
        return future


@contextmanager
def make_executor(jobs: int) -> Iterator[Executor]:
    if jobs <= 1:
        yield InlineExecutor()
        return
    from joblib.externals.loky import ProcessPoolExecutor

    # loky sets the environment before the worker imports anything, so OpenMP starts single-threaded.
    with ProcessPoolExecutor(max_workers=jobs, env=WORKER_ENV) as pool:
        yield pool


def default_jobs(requested: int) -> int:
    if requested > 0:
        return requested
    # The cores this process may use (a container's CPU set), not the machine's.
    return usable_cpus()


# ------------------------------------------------------------------------------------------------
# Models and scores, computed once and shared by every policy


@dataclass
class ModelRef:
    trained_on: str  # the replay month it was trained at (the last month of its window)
    window: list[str]
    key: str
    folder: Path
    future: Future[dict[str, Any]] | None = None
    _reference: dict[str, Any] | None = None

    @property
    def reference(self) -> dict[str, Any]:
        if self._reference is None:
            if self.future is not None:
                self._reference = self.future.result()
            else:
                self._reference = json.loads((self.folder / REFERENCE_FILE).read_text())
        return self._reference

    def ready(self) -> None:
        _ = self.reference  # waits for the fit and surfaces its exception here

    @property
    def label(self) -> str:
        return self.window[0] if len(self.window) == 1 else f"{self.window[0]}..{self.window[-1]}"


@dataclass
class Scores:
    """What one (model, month) pair yields: accuracy, and the drift check when a policy needs it."""

    metrics: dict[str, Any]
    drift: dict[str, Any] | None = None


@dataclass
class Store:
    """The shared, content-keyed results of a replay, on disk under ``cache_dir``."""

    params: Params
    data: MonthData
    timeline: Timeline
    executor: Executor
    cache_dir: Path
    models: dict[str, ModelRef] = field(default_factory=dict)
    fits: int = 0
    scored: int = 0
    drift_checks: int = 0
    challengers: int = 0

    def __post_init__(self) -> None:
        import evidently
        import sklearn

        self._model_salt = digest(
            self.params.train.model_dump(),
            self.params.split.model_dump(),
            code_digest(*MODEL_CODE),
            sklearn.__version__,
        )
        self._challenger_salt = digest(
            self.params.train.model_dump(),
            self.params.drift.late_fraction,
            code_digest(*GAIN_CODE),
            sklearn.__version__,
        )
        drift = self.params.drift
        # performance_threshold does not change Evidently's verdict, so it stays out of the key.
        self._drift_salt = digest(
            drift.drift_share, drift.sample_rows, code_digest(*DRIFT_CODE), evidently.__version__
        )

    def window(self, month: str) -> list[str]:
        return MonthParams(
            reference=month, current=month, train_window=self.params.months.train_window
        ).training_months

    def model(self, month: str) -> ModelRef:
        """The model trained at ``month``; its fit starts in a worker (cached models are reused)."""
        if month in self.models:
            return self.models[month]
        window = self.window(month)
        key = digest(self._model_salt, [self.data.key(m) for m in window])
        folder = self.cache_dir / "models" / key
        ref = ModelRef(month, window, key, folder)
        if not (folder / REFERENCE_FILE).exists():
            frame = pd.concat([self.timeline.labelled(m) for m in window])
            ref.future = self.executor.submit(fit_model, self.params, frame, str(folder))
            self.fits += 1
        self.models[month] = ref
        return ref

    def score(self, refs: list[ModelRef], drift_for: set[str], month: str) -> dict[str, Scores]:
        """Score each deployed model on ``month``: predict, then reveal the labels, then measure.

        ``drift_for`` names the models (by training month) whose drift check a policy needs.
        """
        paths = {
            ref.trained_on: (
                self.cache_dir / "scores" / f"{digest(ref.key, self.data.key(month))}.json",
                self.cache_dir / "drift" / f"{digest(ref.key, self.data.key(month), self._drift_salt)}.json",
            )
            for ref in refs
        }
        pending: dict[str, Future[tuple[np.ndarray, dict[str, Any] | None]]] = {}
        features = None
        # Models already fitted go first, so their scoring overlaps the fit still running (the
        # newest model, from last month's retrain): that fit is the replay's critical path.
        for ref in sorted(refs, key=lambda r: r.future is not None and not r.future.done()):
            metrics_path, drift_path = paths[ref.trained_on]
            want_drift = ref.trained_on in drift_for and not drift_path.exists()
            if metrics_path.exists() and not want_drift:
                continue
            ref.ready()
            if features is None:
                features = self.timeline.features(month)
            drift = self.params.drift if want_drift else None
            pending[ref.trained_on] = self.executor.submit(score_month, str(ref.folder), features, drift)
        predictions = {name: future.result() for name, future in pending.items()}
        # Every model has now predicted the month: from here on its labels may be read.
        self.timeline.reveal(month)
        labels = None
        out: dict[str, Scores] = {}
        for ref in refs:
            metrics_path, drift_path = paths[ref.trained_on]
            if ref.trained_on in predictions:
                pred, drift = predictions[ref.trained_on]
                if not metrics_path.exists():
                    labels = self.timeline.labels(month) if labels is None else labels
                    write_json(regression_metrics(labels, pred), metrics_path)
                    self.scored += 1
                if drift is not None:
                    write_json(drift, drift_path)
                    self.drift_checks += 1
            # A cached score embodies the month's labels too: read only once the month is revealed.
            self.timeline.check_labels(month)
            metrics = json.loads(metrics_path.read_text())
            drift = json.loads(drift_path.read_text()) if ref.trained_on in drift_for else None
            out[ref.trained_on] = Scores(metrics, drift)
        return out


    def gains(self, refs: list[ModelRef], month: str) -> dict[str, dict[str, Any]]:
        """The trigger's expected gain for each model at ``month`` (its labels must be revealed)."""
        self.timeline.check_labels(month)
        salt = digest(self._challenger_salt, self.params.drift.min_retrain_gain)
        out: dict[str, dict[str, Any]] = {}
        todo: list[tuple[ModelRef, Path]] = []
        for ref in refs:
            path = self.cache_dir / "gain" / f"{digest(ref.key, self.data.key(month), salt)}.json"
            if path.exists():
                out[ref.trained_on] = json.loads(path.read_text())
            else:
                todo.append((ref, path))
        if not todo:
            return out
        for ref, _ in todo:
            ref.ready()
        facts = self.cache_dir / "challengers" / f"{digest(self.data.key(month), self._challenger_salt)}.json"
        if not facts.exists():
            self.challengers += 1
        facts.parent.mkdir(parents=True, exist_ok=True)
        folders = [str(ref.folder) for ref, _ in todo]
        future = self.executor.submit(
            split_gains, folders, self.timeline.labelled(month), self.params, month, str(facts)
        )
        computed = future.result()
        for ref, path in todo:
            write_json(computed[str(ref.folder)], path)
            out[ref.trained_on] = computed[str(ref.folder)]
        return out


# ------------------------------------------------------------------------------------------------
# The replay


@dataclass
class PolicyState:
    policy: Policy
    model: ModelRef
    trained_step: int
    records: list[dict[str, Any]] = field(default_factory=list)


# progress(phase, month, total): phase "load" (featurising months) or "replay", once per month done.
ProgressHook = Callable[[str, str, int], None]


def _prefetch(data: MonthData, months: list[str], executor: Executor, progress: ProgressHook) -> None:
    """Featurise the months not cached yet in parallel (only for the built-in source)."""
    if not isinstance(data, SourceMonths):
        return
    todo = [m for m in months if not data.cached(m)]
    futures = {m: executor.submit(build_month, m, data.params) for m in todo}
    for month in todo:
        data.put(month, futures[month].result())
        progress("load", month, len(todo))


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
    """Replay ``months`` under each policy; returns per-policy, per-month records and counters.

    ``on_predicted(month)`` is called once every policy's model has predicted ``month`` and before
    any of its labels are read (tests use it to change the labels at exactly that moment).
    """
    if len(months) < 2:
        raise StageError("a backtest needs at least two months: one to train on, one to predict")
    if sorted(months, key=month_index) != months or len(set(months)) != len(months):
        raise StageError(f"months must be distinct and in order: {', '.join(months)}")
    progress = progress or (lambda phase, month, total: None)
    timeline = Timeline(data, on_predicted)
    with _cache_root(cache_dir) as root, make_executor(jobs) as executor:
        store = Store(params, data, timeline, executor, root)
        needed = sorted(
            {m for month in months[:-1] for m in store.window(month)} | set(months), key=month_index
        )
        check_available(data, months, needed, params)
        _prefetch(data, needed, executor, progress)

        # Step 0 bootstraps: the first month is history every policy starts from.
        timeline.advance(months[0])
        timeline.reveal(months[0], predicted=False)
        first = store.model(months[0])
        states = [PolicyState(p, first, 0) for p in policies]
        for state in states:
            state.records.append(
                {
                    "month": months[0],
                    "step": 0,
                    "model": None,
                    "retrain": True,
                    "bootstrap": True,
                    "reason": f"bootstrap: the first model learns {first.label}; nothing was deployed yet",
                }
            )
        progress("replay", months[0], len(months))

        for step, month in enumerate(months[1:], start=1):
            timeline.advance(month)
            deployed = {s.model.trained_on: s.model for s in states}
            drift_for = {s.model.trained_on for s in states if s.policy.needs_drift}
            refs = sorted(deployed.values(), key=lambda r: month_index(r.trained_on))
            scores = store.score(refs, drift_for, month)
            if step < len(months) - 1:
                # periodic_k1 retrains every month: start that fit now, beside the challenger's.
                store.model(month)
            gain_for = {s.model.trained_on for s in states if s.policy.needs_gain}
            gains = store.gains([deployed[m] for m in sorted(gain_for, key=month_index)], month)
            retrain_here = False
            for state in states:
                ref = state.model
                score = scores[ref.trained_on]
                age = step - state.trained_step
                reference_mae = ref.reference["holdout"]["mae"]
                gain = gains.get(ref.trained_on) if state.policy.needs_gain else None
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
                state.records.append(record)
                retrain_here |= retrain
            # The model trained on the last month would serve only after the replay ends: its
            # decision counts (it is what production would pay), its fit is skipped.
            if retrain_here and step < len(months) - 1:
                new = store.model(month)
                for state in states:
                    if state.records[-1]["retrain"]:
                        state.model, state.trained_step = new, step
            progress("replay", month, len(months))
        for ref in store.models.values():
            ref.ready()
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
