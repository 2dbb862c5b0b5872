"""Which months the configured data source has published (synthetic, a folder, or TLC's server)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from autoops.gitops import LoopError
from core.months import add_months, current_month, month_index
from core.params import Params

# How far back `latest-month` probes TLC: it publishes with a lag of about two months, so a year
# without a new file means something other than lag is wrong.
TLC_LOOKBACK_MONTHS = 12


def latest_month(root: Path, params: Params, as_of: date | None = None) -> str:
    """The newest month the configured source can deliver."""
    today_month = current_month(as_of)
    source = params.data.source
    if source == "synthetic":
        # The generator can make any month; "published" means complete, i.e. last month.
        return add_months(today_month, -1)
    if source == "dir":
        from core.tlc import months_in

        folder = (root / params.data.dir).resolve()
        if not folder.is_dir():
            raise LoopError(f"data.dir {params.data.dir} ({folder}) is not a folder")
        months = [m for m in months_in(folder) if month_index(m) <= month_index(today_month)]
        if not months:
            raise LoopError(f"no green_tripdata_YYYY-MM.parquet files in {folder}")
        return months[-1]
    from core.tlc import probe_month

    for back in range(TLC_LOOKBACK_MONTHS + 1):
        month = add_months(today_month, -back)
        if probe_month(month, params.data):
            return month
    raise LoopError(f"TLC has published no month in the {TLC_LOOKBACK_MONTHS} months before {today_month}")


def ensure_published(root: Path, params: Params, month: str, as_of: date | None = None) -> None:
    """Refuse a month the source has not published: a retrain on it would train on nothing real."""
    today_month = current_month(as_of)
    if month_index(month) > month_index(today_month):
        raise LoopError(
            f"{month} is not published yet: it is after this month ({today_month}, the newest possible)"
        )
    if params.data.source == "tlc":
        from core.tlc import probe_month

        # One HEAD request for the month itself: TLC's newest file is the authority, not the calendar.
        if not probe_month(month, params.data):
            raise LoopError(
                f"{month} is not published yet: TLC has no file for it (newest: see `autoops latest-month`)"
            )
        return
    newest = latest_month(root, params, as_of)
    if month_index(month) > month_index(newest):
        raise LoopError(f"{month} is not published yet: the newest {params.data.source} month is {newest}")
