""".autoops/check.json: `autoops check`'s verdict on a month, which `propose` and the workflow read."""

from __future__ import annotations

from typing import ClassVar

from core.artifacts.base import Artifact, Part
from core.paths import CHECK_RESULT


class ChecksOutcome(Part):
    """The data checks' verdict, without the evidence (that stays in data_checks.json)."""

    passed: bool
    accepted: bool
    blocking: list[str]
    warnings: list[str]
    problem: str | None


class CheckResult(Artifact):
    PATH: ClassVar = CHECK_RESULT
    WRITTEN_BY: ClassVar = "`autoops check`"

    month: str
    reference_month: str
    # None (like the drift fields) when a data problem stopped the check before the drift stage.
    model_version: str | None
    breach: bool
    data_drift: bool | None
    performance_drift: bool | None
    expected_gain: float | None
    drifted_columns: list[str]
    reason: str
    branch: str
    data_problem: str | None
    data_checks: ChecksOutcome
