"""reports/metrics/data_checks.json: the data_checks stage's verdict on the current month's raw data."""

from __future__ import annotations

from typing import ClassVar

from core.artifacts.base import Artifact, Part
from core.paths import DATA_CHECKS_METRICS


class DataCheck(Part):
    name: str
    figure: float
    threshold: float
    # How a person reads the threshold ("max 2.0%", "0.4x-2x").
    threshold_text: str
    blocking: bool
    passed: bool
    detail: str


class TargetBand(Part):
    """The median trip duration of one vendor (or "all") in one distance band, then and now."""

    vendor: str
    band: str
    reference_trips: int
    current_trips: int
    reference_median_min: float | None
    current_median_min: float | None
    change: float | None


class DataChecks(Artifact):
    PATH: ClassVar = DATA_CHECKS_METRICS
    WRITTEN_BY: ClassVar = "the data_checks stage (dvc repro data_checks)"

    month: str
    reference_month: str
    rows: int
    reference_rows: int
    passed: bool
    # A person accepted the month's problems (data_checks.accepted_months).
    accepted: bool
    blocking: list[str]
    warnings: list[str]
    problem: str | None
    checks: list[DataCheck]
    # Rows each filter drops, per vendor id ("all" = the month), plus "rows" and "kept".
    filters: dict[str, dict[str, int]]
    target_by_vendor: list[TargetBand]
