"""The one place params.yaml is read and validated.

Pydantic turns a typo or an impossible value into one clear error before any stage does work,
instead of a KeyError half-way through a run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.months import add_months, month_index, validate_month

PARAMS_FILE = Path("params.yaml")
_POLICY_RE = re.compile(r"^(static|periodic(:[1-9][0-9]*)?|data_drift|performance|auto)$")
POLICY_SPECS = "static, periodic, periodic:K, data_drift, performance or auto"


def policy_spec(spec: str) -> tuple[str, int | None]:
    """``(kind, K)`` of a backtest policy spec (``periodic:6`` -> ``("periodic", 6)``); ValueError if bad."""
    spec = spec.strip()
    if not _POLICY_RE.match(spec):
        raise ValueError(f"unknown policy {spec!r}: expected {POLICY_SPECS}")
    kind, _, every = spec.partition(":")
    return kind, int(every) if every else None


class _Strict(BaseModel):
    # Unknown keys are almost always typos; refuse them rather than silently ignore them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(_Strict):
    # A key of core.sources.SOURCES, checked by core.sources.source_for when the source is asked
    # for: listing the names here would make adding a source an edit of this file too.
    source: str = Field("synthetic", min_length=1)
    tlc_url: str = "https://d37ci6vzurychx.cloudfront.net/trip-data/green_tripdata_{month}.parquet"
    dir: str = "../shared/data/tlc"
    cache_dir: str = ".cache/tlc"
    timeout_s: float = Field(60, gt=0)
    retries: int = Field(4, ge=0, le=20)


class MonthParams(_Strict):
    reference: str
    current: str
    train_window: int = Field(1, ge=1, le=36)

    _check = field_validator("reference", "current")(validate_month)

    @model_validator(mode="after")
    def _order(self) -> MonthParams:
        if month_index(self.current) < month_index(self.reference):
            raise ValueError(f"months.current ({self.current}) is before months.reference ({self.reference})")
        return self

    @property
    def training_months(self) -> list[str]:
        return [add_months(self.reference, -i) for i in range(self.train_window - 1, -1, -1)]

    @property
    def all_months(self) -> list[str]:
        months = self.training_months
        return months if self.current in months else [*months, self.current]


class SyntheticParams(_Strict):
    seed: int = 42
    rows_per_month: int = Field(60000, ge=100, le=200_000_000)
    shift_month: str = "2024-05"
    shift_speed_factor: float = Field(0.7, gt=0.1, le=2.0)
    shift_long_trip_share: float = Field(0.35, ge=0.0, le=1.0)

    _check = field_validator("shift_month")(validate_month)


class FilterParams(_Strict):
    min_duration_min: float = Field(1, ge=0)
    max_duration_min: float = Field(60, gt=0)
    max_distance_mi: float = Field(100, gt=0)


class SplitParams(_Strict):
    holdout_fraction: float = Field(0.2, gt=0.0, lt=0.9)
    seed: int = 7


class HGBParams(_Strict):
    max_iter: int = Field(300, ge=1)
    learning_rate: float = Field(0.1, gt=0)
    max_leaf_nodes: int = Field(63, ge=2)
    min_samples_leaf: int = Field(20, ge=1)
    l2_regularization: float = Field(0.0, ge=0)


class RFParams(_Strict):
    n_estimators: int = Field(100, ge=1)
    max_depth: int | None = 20
    min_samples_leaf: int = Field(3, ge=1)
    max_features: float = Field(0.6, gt=0, le=1)
    n_jobs: int = -1


class TrainParams(_Strict):
    model: Literal["hist_gradient_boosting", "random_forest"] = "hist_gradient_boosting"
    seed: int = 42
    # Training rows beyond this are sampled (core.training.sample_positions): bounds memory and time.
    max_rows: int = Field(500_000, ge=1000)
    hist_gradient_boosting: HGBParams = HGBParams()
    random_forest: RFParams = RFParams()


class DriftParams(_Strict):
    drift_share: float = Field(0.5, gt=0, le=1)
    sample_rows: int = Field(20000, ge=100)
    performance_threshold: float = Field(0.2, gt=0)
    min_retrain_gain: float = Field(0.04, gt=-1, lt=1)
    late_fraction: float = Field(0.25, gt=0.05, lt=0.6)


class DataChecksParams(_Strict):
    """core/data_checks.py: what makes a month's data untrustworthy (params.yaml says why each)."""

    min_days_covered: float = Field(0.9, ge=0, le=1)
    min_day_trip_share: float = Field(0.05, ge=0, lt=1)
    min_trips_per_day_ratio: float = Field(0.4, gt=0)
    max_trips_per_day_ratio: float = Field(2.0, gt=0)
    min_vendor_share: float = Field(0.03, ge=0, lt=1)
    min_vendor_rows_ratio: float = Field(0.25, ge=0, le=1)
    min_kept_share: float = Field(0.5, ge=0, le=1)
    max_null_share_increase: float = Field(0.3, gt=0, le=1)
    max_invalid_share: float = Field(0.02, ge=0, le=1)
    max_duplicate_share: float = Field(0.01, ge=0, le=1)
    min_band_trips: int = Field(200, ge=1)
    min_bands: int = Field(3, ge=1, le=5)
    max_vendor_divergence: float = Field(0.25, gt=0)
    accepted_months: list[str] = []

    @field_validator("accepted_months")
    @classmethod
    def _months(cls, value: list[str]) -> list[str]:
        return [validate_month(m) for m in value]


class MlflowParams(_Strict):
    experiment: str = "auto-ops-green-taxi"
    registered_model: str = "green-taxi-duration"


class BacktestParams(_Strict):
    """``autoops backtest`` (autoops/backtest.py); read by no pipeline stage."""

    start: str = "2023-11"
    end: str = "2025-04"
    months: list[str] = []
    # static | periodic | periodic:K | data_drift | performance | auto
    policies: list[str] = ["static", "periodic", "data_drift", "performance", "auto"]
    periodic_every: int = Field(3, ge=1, le=120)
    jobs: int = Field(0, ge=0, le=64)
    cache_dir: str = ".cache/backtest"

    _check = field_validator("start", "end")(validate_month)

    @field_validator("months")
    @classmethod
    def _months(cls, value: list[str]) -> list[str]:
        return [validate_month(m) for m in value]

    @field_validator("policies")
    @classmethod
    def _policies(cls, value: list[str]) -> list[str]:
        bad = [p for p in value if not _POLICY_RE.match(p)]
        if bad:
            noun = "policy" if len(bad) == 1 else "policies"
            raise ValueError(f"unknown {noun} {', '.join(bad)}: expected {POLICY_SPECS}")
        return value


class Params(_Strict):
    data: DataParams = DataParams()
    months: MonthParams
    synthetic: SyntheticParams = SyntheticParams()
    filters: FilterParams = FilterParams()
    split: SplitParams = SplitParams()
    train: TrainParams = TrainParams()
    drift: DriftParams = DriftParams()
    data_checks: DataChecksParams = DataChecksParams()
    mlflow: MlflowParams = MlflowParams()
    backtest: BacktestParams = BacktestParams()


class ParamsError(ValueError):
    """params.yaml is missing or invalid."""


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ParamsError(f"{path}: not found (run from the repository root)") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    return params_from_dict(raw or {}, str(path))


def params_from_dict(raw: dict[str, Any], source: str) -> Params:
    """Validate already-parsed params (``source`` names them in errors), e.g. params.yaml plus overrides."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ParamsError(f"{source}: {problems}") from exc
