from __future__ import annotations

import pytest

from core.months import MonthError, add_months, month_range, validate_month
from core.params import MonthParams


@pytest.mark.parametrize("bad", ["2023-13", "2023-00", "23-01", "2023/01", "", "2023-1", "1999-05"])
def test_invalid_months_are_refused_with_the_value_named(bad: str) -> None:
    with pytest.raises(MonthError, match="invalid month"):
        validate_month(bad)


def test_month_arithmetic_crosses_years() -> None:
    assert add_months("2023-12", 1) == "2024-01"
    assert add_months("2024-01", -13) == "2022-12"
    assert month_range("2023-11", "2024-02") == ["2023-11", "2023-12", "2024-01", "2024-02"]


def test_training_window_ends_at_reference() -> None:
    months = MonthParams(reference="2024-03", current="2024-04", train_window=3)
    assert months.training_months == ["2024-01", "2024-02", "2024-03"]
    assert months.all_months == ["2024-01", "2024-02", "2024-03", "2024-04"]


def test_current_before_reference_is_an_error() -> None:
    with pytest.raises(ValueError, match="before"):
        MonthParams(reference="2024-03", current="2024-02")
