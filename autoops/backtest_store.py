"""Models and scores of a backtest, computed once and shared by every policy, cached on disk.

A model is a pure function of its training window (content-hashed), so "the model trained on
2024-05" is fitted once however many policies retrain there, and scoring model X on month Y (and
its Evidently drift check, and the trigger's expected gain) is done once however many policies
deploy X at Y. Everything lands under the cache folder (``.cache/backtest/``: ``models/``,
``scores/``, ``drift/``, ``gain/``, ``challengers/``) keyed on data hashes, the params that shape
it and the code, so a second replay reads what the first computed.
"""

from __future__ import annotations

import json
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autoops.backtest_data import MonthData, Timeline, code_digest, digest
from autoops.backtest_workers import REFERENCE_FILE, fit_model, score_month, split_gains
from core.io import write_json
from core.metrics import regression_metrics
from core.params import MonthParams, Params

MODEL_CODE = ("core.model", "core.training", "core.feature_tables", "core.features")
GAIN_CODE = (*MODEL_CODE, "core.trigger")
DRIFT_CODE = ("core.drift",)


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
                self._score_file(ref, month),
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

    def _score_file(self, ref: ModelRef, month: str) -> Path:
        return self.cache_dir / "scores" / f"{digest(ref.key, self.data.key(month))}.json"

    def hindsight(self, months: list[str]) -> dict[str, dict[str, float]]:
        """Every serving model's MAE on every later replayed month, once the replay is over.

        The policies deployed only some (model, month) pairs; the hindsight limit
        (autoops/backtest_hindsight.py) needs them all. The models are those trained at every
        month but the last (the calendar's ``periodic_k1`` fitted them all already); a pair a
        policy deployed is read from the same cached score, so the matrix and the replay agree to
        the last digit. Every label is in the past by now: the timeline still checks it.
        """
        refs = [self.model(month) for month in months[:-1]]
        paths = {
            (ref.trained_on, month): self._score_file(ref, month)
            for i, ref in enumerate(refs)
            for month in months[i + 1 :]
        }
        for month in months[1:]:
            todo = [
                r for r in refs if (r.trained_on, month) in paths and not paths[r.trained_on, month].exists()
            ]
            if not todo:
                continue
            for ref in todo:
                ref.ready()
            features = self.timeline.features(month)
            futures = [self.executor.submit(score_month, str(ref.folder), features, None) for ref in todo]
            labels = self.timeline.labels(month)
            for ref, future in zip(todo, futures, strict=True):
                pred, _ = future.result()
                write_json(regression_metrics(labels, pred), paths[ref.trained_on, month])
                self.scored += 1
        matrix: dict[str, dict[str, float]] = {ref.trained_on: {} for ref in refs}
        for (trained_on, month), path in paths.items():
            self.timeline.check_labels(month)
            matrix[trained_on][month] = json.loads(path.read_text())["mae"]
        return matrix

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
