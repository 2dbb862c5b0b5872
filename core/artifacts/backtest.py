"""reports/backtest.json: `autoops backtest`'s replay of the retrain policies, month by month."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from core.artifacts.base import Artifact, Part
from core.paths import BACKTEST_RESULT


class Settings(Part):
    """The knobs that shape the figures (autoops/backtest.py's ``settings``)."""

    source: str
    train_window: int
    model: str
    drift_share: float
    sample_rows: int
    performance_threshold: float
    min_retrain_gain: float
    late_fraction: float
    periodic_every: int
    # Only for hist_gradient_boosting, and for the synthetic source.
    max_iter: int | None = None
    rows_per_month: int | None = None
    shift_month: str | None = None


class Step(Part):
    """One policy's month: the model it served, how it scored, and whether it retrained.

    The first month is the bootstrap (the first model learns it; nothing is scored); the signal
    fields appear only for the policies that read that signal.
    """

    step: int
    month: str
    model: str | None
    retrain: bool
    reason: str
    bootstrap: bool | None = None
    model_age: int | None = None
    reference_mae: float | None = None
    mae: float | None = None
    rmse: float | None = None
    r2: float | None = None
    mae_change: float | None = None
    performance_drift: bool | None = None
    data_drift: bool | None = None
    drifted_share: float | None = None
    expected_gain: float | None = None


class PolicySummary(Part):
    description: str
    mean_mae: float
    mean_rmse: float
    # Mean MAE above periodic_k1 (retrain every month), and the share of static's it removes.
    degradation: float
    degradation_reduction: float | None
    retrains: int
    retrain_months: list[str]


class VersusCalendar(Part):
    policy: str
    retrains: int
    mean_mae: float
    degradation_reduction: float | None
    dominates_calendar: bool
    beaten_by: list[str]


class TrainedModel(Part):
    window: list[str]
    reference_mae: float


class FrontierPoint(Part):
    """The best schedule with at most ``retrains`` retrains, knowing every month's labels."""

    retrains: int
    mean_mae: float
    retrain_months: list[str]


class Regret(Part):
    retrains: int
    mean_mae: float
    limit_mae: float
    limit_retrain_months: list[str]
    regret: float
    regret_pct: float


class Hindsight(Part):
    frontier: list[FrontierPoint]
    # MAE of the model trained on each month (key), on each later month (inner key).
    mae: dict[str, dict[str, float]]
    regret: dict[str, Regret]


class Backtest(Artifact):
    PATH: ClassVar = BACKTEST_RESULT
    WRITTEN_BY: ClassVar = "`autoops backtest`"

    versus_calendar: VersusCalendar | None
    months: list[str]
    scored_months: list[str]
    baseline: str
    # JSON objects are written key-sorted; this keeps the order the policies were asked for.
    policy_order: list[str]
    settings: Settings
    summary: dict[str, PolicySummary]
    policies: dict[str, list[Step]]
    models: dict[str, TrainedModel]
    hindsight: Hindsight
    # What the replay computed rather than took from its cache (fits, scores, drift checks): the
    # command prints it; never written (the file must not depend on the cache's state).
    work: dict[str, int] | None = Field(default=None, exclude=True)
