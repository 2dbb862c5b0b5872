"""Realistic feed faults, injected into a real month's canonical frame (core/schema.py).

Shared by the data-check tests (tests/test_data_checks.py) and the calibration bench
(bench/data_checks.py), so the table of figures and the tests judge the very same faults.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

PICKUP, DROPOFF = "lpep_pickup_datetime", "lpep_dropoff_datetime"


def vendor_clock(minutes: int, vendor: int = 2) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """One vendor's dropoff clock ``minutes`` late: every one of its trips looks that much longer."""

    def fault(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy()
        late = out["VendorID"] == vendor
        out.loc[late, DROPOFF] = out.loc[late, DROPOFF] + pd.Timedelta(minutes=minutes)
        return out

    return fault


def cut_after_day(day: int) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The file ends after ``day``: an upload that stopped half-way through the month."""

    def fault(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame[PICKUP].dt.day <= day].reset_index(drop=True)

    return fault


def duplicated(frame: pd.DataFrame) -> pd.DataFrame:
    """Every trip twice: a feed re-sent and appended instead of replaced."""
    return pd.concat([frame, frame], ignore_index=True)


def column_null(column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """One column all null: a field the vendor stopped sending."""

    def fault(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy()
        out[column] = None
        return out

    return fault


def other_year(years: int = -1) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Every pickup (and dropoff) in another year: a file of the wrong year under this month's name."""

    def fault(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy()
        for column in (PICKUP, DROPOFF):
            out[column] = out[column] + pd.DateOffset(years=years)
        return out

    return fault


# name -> (fault, the check that must name it)
FAULTS: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str]] = {
    "vendor 2 dropoff clock +15 min": (vendor_clock(15), "vendor_consistency"),
    "vendor 2 dropoff clock +65 min": (vendor_clock(65), "vendor_consistency"),
    "file cut after day 15": (cut_after_day(15), "days_covered"),
    "every trip duplicated": (duplicated, "duplicates"),
    "VendorID all null": (column_null("VendorID"), "nulls"),
    "pickups from another year": (other_year(-1), "pickup_in_month"),
}
