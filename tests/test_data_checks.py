"""The data checks on real months: realistic feed faults stop a retrain, real changes do not.

Faults are injected into real 2023-02 (tests/data_faults.py) and checked against real 2023-01, the
case of issue 18: a champion trained on 2023-01 that, without the checks, "learns" a broken clock.
Each month is profiled in process (well under a second); the decision is core/trigger.py's own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autoops.check import data_problem_markdown
from autoops.evidence_report import data_checks_lines
from core.artifacts.data_checks import DataChecks
from core.data_checks import evaluate, vendor_check
from core.month_profile import BIN_MIN, N_BINS, MonthProfile, profile_tables
from core.params import DataChecksParams, Params, load_params
from core.schema import CANONICAL_SCHEMA, normalize
from core.trigger import decide
from tests.data_faults import FAULTS

ROOT = Path(__file__).resolve().parents[1]
# What the trigger said about the clock +15 fault before the checks existed (issue 18): drift and
# a big expected gain, i.e. "retrain recommended" on its own.
LOUD_GAIN = {
    "month": "2023-02",
    "cut": "2023-02-22 04:39",
    "early_rows": 45_000,
    "late_rows": 15_000,
    "challenger_late_mae": 2.390,
    "champion_late_mae": 13.281,
    "expected_gain": 0.82,
    "min_retrain_gain": 0.04,
}
DRIFTED = {
    "data_drift": True,
    "drifted_columns": ["prediction", "trip_distance"],
    "n_columns": 2,
    "drifted_share": 1.0,
    "drift_share_threshold": 0.5,
}


@pytest.fixture(scope="module")
def params() -> Params:
    return load_params(ROOT / "params.yaml")


def _real(real_dir: Path, month: str) -> pd.DataFrame:
    path = real_dir / f"green_tripdata_{month}.parquet"
    return normalize(pq.read_table(path), str(path)).to_pandas()


def _profile(month: str, frame: pd.DataFrame, params: Params) -> MonthProfile:
    table = pa.Table.from_pandas(frame, schema=CANONICAL_SCHEMA, preserve_index=False)
    return profile_tables(month, [table], params.filters)


@pytest.fixture(scope="module")
def january(real_dir: Path, params: Params) -> MonthProfile:
    return _profile("2023-01", _real(real_dir, "2023-01"), params)


@pytest.fixture(scope="module")
def february(real_dir: Path) -> pd.DataFrame:
    return _real(real_dir, "2023-02")


@pytest.mark.realdata
def test_the_clean_month_passes_and_the_trigger_decides(
    january: MonthProfile, february: pd.DataFrame, params: Params
) -> None:
    checks = evaluate(january, _profile("2023-02", february, params), params.data_checks)
    assert checks["passed"] and not checks["warnings"] and checks["problem"] is None
    assert decide(DRIFTED, LOUD_GAIN, 0.04, checks)[0]
    # Every vendor big enough is judged: the consistency check is evidence, not a skipped formality.
    [vendors] = [c for c in checks["checks"] if c["name"] == "vendor_consistency"]
    assert "not judged" not in vendors["detail"]


@pytest.mark.realdata
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_feed_fault_is_never_a_retrain(
    fault: str, january: MonthProfile, february: pd.DataFrame, params: Params
) -> None:
    inject, evidence = FAULTS[fault]
    checks = evaluate(january, _profile("2023-02", inject(february), params), params.data_checks)
    assert not checks["passed"] and evidence in checks["blocking"], checks["blocking"]
    retrain, reason = decide(DRIFTED, LOUD_GAIN, 0.04, checks)
    # Drift and an 82% expected gain say retrain; the data says the month is broken.
    assert not retrain
    assert reason.startswith(f"data problem in 2023-02: {evidence}: ") and "(threshold " in reason
    assert reason == checks["problem"]


@pytest.mark.realdata
def test_the_evidence_names_the_vendor_and_what_the_filters_dropped(
    january: MonthProfile, february: pd.DataFrame, params: Params
) -> None:
    inject, _ = FAULTS["vendor 2 dropoff clock +65 min"]
    checks = evaluate(january, _profile("2023-02", inject(february), params), params.data_checks)
    assert checks["problem"].startswith(
        "data problem in 2023-02: vendor_consistency: vendor 2's trip durations"
    )
    # The month lost most of its trips, and says which filter took them from which vendor.
    [kept] = [c for c in checks["checks"] if c["name"] == "kept_share"]
    assert not kept["passed"] and kept["detail"].startswith(f"{kept['figure']:.1%} of vendor 2's trips")
    assert "duration_in_range drops" in kept["detail"]
    assert checks["filters"]["duration_in_range"]["2"] > 0.8 * checks["filters"]["rows"]["2"]
    # Vendor 1 did not move; vendor 2 moved by about the injected hour in every band.
    bands = {(r["vendor"], r["band"]): r for r in checks["target_by_vendor"]}
    assert abs(bands["vendor 1", "2-4 mi"]["change"]) < 0.1 < 2 < bands["vendor 2", "2-4 mi"]["change"]
    markdown = "\n".join(data_checks_lines(DataChecks.model_validate(checks)))
    assert "| `vendor_consistency` | ❌ blocks |" in markdown and "| vendor 2 | " in markdown
    summary = data_problem_markdown(DataChecks.model_validate(checks), checks["problem"])
    assert checks["problem"] in summary and "--accept-data-problems" in summary


@pytest.mark.realdata
def test_a_person_can_accept_the_data(january: MonthProfile, february: pd.DataFrame, params: Params) -> None:
    inject, _ = FAULTS["vendor 2 dropoff clock +15 min"]
    accepting = params.data_checks.model_copy(update={"accepted_months": ["2023-02"]})
    checks = evaluate(january, _profile("2023-02", inject(february), params), accepting)
    assert not checks["passed"] and checks["accepted"]
    retrain, reason = decide(DRIFTED, LOUD_GAIN, 0.04, checks)
    assert retrain and reason.endswith(f"(data problems accepted by a person: {checks['problem']})")
    assert "**Accepted by a person**" in "\n".join(data_checks_lines(DataChecks.model_validate(checks)))


@pytest.mark.realdata
def test_a_real_change_is_still_a_retrain(real_dir: Path, params: Params) -> None:
    """2021 -> 2022 moved every vendor (trips fell, distances and durations moved): the world, not a feed."""
    before, after = (_profile(m, _real(real_dir, m), params) for m in ("2021-02", "2022-01"))
    checks = evaluate(before, after, params.data_checks)
    assert checks["passed"] and not checks["blocking"], checks["problem"]
    assert decide(DRIFTED, LOUD_GAIN, 0.04, checks) == decide(DRIFTED, LOUD_GAIN, 0.04)


def test_the_synthetic_regime_shift_is_still_a_retrain(params: Params) -> None:
    from core.months import add_months
    from core.sources.synthetic import generate_month

    shift = params.synthetic.shift_month
    before, after = (
        _profile(m, normalize(generate_month(m, params.synthetic), m).to_pandas(), params)
        for m in (add_months(shift, -1), shift)
    )
    checks = evaluate(before, after, params.data_checks)
    assert checks["passed"], checks["problem"]
    # Every vendor's trips got slower together (1/0.7 as long): moved, and consistently.
    moved = [
        r["change"] for r in checks["target_by_vendor"] if r["vendor"] == "all" and r["change"] is not None
    ]
    assert max(moved) > 0.2


def test_small_vendors_are_not_judged_on_a_few_hundred_trips() -> None:
    """Green Taxi's vendor 6 started in 2025 with a few hundred trips in one band: noise, not evidence."""

    def profile(month: str, vendor_6_minutes: float) -> MonthProfile:
        out = MonthProfile(month, rows=5300)
        for band in range(5):
            out.durations[2, band] = np.bincount([int(10 * (band + 1) / BIN_MIN)], minlength=N_BINS) * 1000
        out.durations[6, 4] = np.bincount([int(vendor_6_minutes / BIN_MIN)], minlength=N_BINS) * 300
        return out

    before, after = profile("2025-01", 40.0), profile("2025-02", 80.0)
    check = vendor_check(before, after, DataChecksParams())
    assert check["passed"] and check["detail"].startswith("not judged")
    # Judged on that one band, vendor 6 alone would have failed the month.
    assert not vendor_check(before, after, DataChecksParams(min_bands=1))["passed"]
