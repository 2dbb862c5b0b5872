"""Month strings (``YYYY-MM``): the unit every stage, file and branch name is keyed on."""

from __future__ import annotations

import re
from datetime import date

_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")
# TLC's first Green Taxi month. Not a bound on months (an earlier one is simply not published): the
# synthetic generator walks its slow zone drift from here, so every month's state is reproducible.
FIRST_TLC_MONTH = "2013-08"


class MonthError(ValueError):
    """A month string that is not a real ``YYYY-MM`` month."""


def parse_month(value: str) -> tuple[int, int]:
    """``"2023-02"`` -> ``(2023, 2)``; anything else raises :class:`MonthError` naming the value."""
    match = _MONTH_RE.match(str(value).strip())
    if not match:
        raise MonthError(f"invalid month {value!r}: expected YYYY-MM, e.g. 2023-02")
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12:
        raise MonthError(f"invalid month {value!r}: month must be 01-12")
    if year < 2000 or year > 2100:
        raise MonthError(f"invalid month {value!r}: year out of range")
    return year, month


def validate_month(value: str) -> str:
    year, month = parse_month(value)
    return f"{year:04d}-{month:02d}"


def add_months(value: str, delta: int) -> str:
    year, month = parse_month(value)
    index = year * 12 + (month - 1) + delta
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def month_range(start: str, end: str) -> list[str]:
    """Inclusive list of months from ``start`` to ``end``."""
    if month_index(end) < month_index(start):
        raise MonthError(f"empty month range: {start} is after {end}")
    return [add_months(start, i) for i in range(month_index(end) - month_index(start) + 1)]


def month_index(value: str) -> int:
    year, month = parse_month(value)
    return year * 12 + month - 1


def month_bounds(value: str) -> tuple[date, date]:
    """First day of the month and first day of the next month (half-open interval)."""
    year, month = parse_month(value)
    nyear, nmonth = parse_month(add_months(value, 1))
    return date(year, month, 1), date(nyear, nmonth, 1)


def current_month(today: date | None = None) -> str:
    today = today or date.today()
    return f"{today.year:04d}-{today.month:02d}"
