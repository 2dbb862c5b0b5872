"""The data checks (the data_checks stage, after ingest): can the current month be trusted?

A stage of its own, right after ingest, rather than a step inside featurize or drift: it reads the
raw canonical months (the rows the modelling filters would silently drop are part of the evidence),
it takes seconds, and its verdict is a DVC metric (``reports/metrics/data_checks.json``) that both
the drift stage and ``autoops check`` read. ``check`` runs it first and stops there when a blocking
check fails, so a month known to be broken is never featurised, compared or proposed.

Two kinds of checks, each a record ``{name, figure, threshold, blocking, passed, detail}``:

* rules on single rows, declared as a pandera schema (required columns not null, zone ids and
  distances and fares in range, dropoff after pickup, pickup inside the month) and counted as a
  share of the month's rows, plus exact duplicate trips;
* comparisons with the reference month (the serving model's last training month): days covered,
  trips per day, rows per vendor, what the filters keep (per filter and per vendor), nulls per
  column, and the target's distribution per vendor.

The last one tells a feed fault from a changed world. Green Taxi trips come from independent
vendors' meters (``VendorID``). A real change (traffic, a pandemic, the synthetic regime shift)
moves every vendor's durations for the same distance together; a broken feed (one vendor's dropoff
clock late) moves one vendor's alone. So the median duration per vendor and distance band is
compared with the reference month's, and a vendor whose shift differs from the other vendors'
(pooled) by more than ``max_vendor_divergence`` fails the month. Bands with fewer than
``min_band_trips`` trips on either side are not judged, nor vendors with fewer than ``min_bands``
such bands (Green Taxi's smaller vendors: one band of a few hundred trips is noise, not evidence).

Every month streams one row group at a time: memory is a row group, a few counters and histograms
per month, and one 8-byte hash per row (for exact duplicates).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from core.artifacts.data_checks import DataChecks
from core.month_profile import (
    BANDS,
    N_BINS,
    UNKNOWN_VENDOR,
    MonthProfile,
    median_minutes,
    profile_month,
)
from core.params import DataChecksParams, Params
from core.paths import RAW_DIR

log = logging.getLogger(__name__)

# --- the checks -----------------------------------------------------------------------------------


def _check(
    name: str, figure: float, threshold: float, *, blocking: bool, passed: bool, detail: str, limit: str
) -> dict[str, Any]:
    return {
        "name": name,
        "figure": round(float(figure), 6),
        "threshold": threshold,
        "threshold_text": limit,
        "blocking": blocking,
        "passed": bool(passed),
        "detail": detail,
    }


RULE_WORDS = {
    "required_not_null": "null in a required column",
    "pickup_in_month": "pickup outside the month",
    "dropoff_after_pickup": "dropoff at or before pickup (zero or negative duration)",
    "zone_id_valid": "zone id out of range",
    "distance_not_negative": "negative distance",
    "fare_not_negative": "negative fare",
}


def rule_checks(cur: MonthProfile, cfg: DataChecksParams) -> list[dict[str, Any]]:
    checks = []
    for rule, words in RULE_WORDS.items():
        worst, column = max(((n, col) for (r, col), n in cur.rules.items() if r == rule), default=(0, ""))
        share = worst / cur.rows
        where = f" ({column})" if column and column != "row" else ""
        checks.append(
            _check(
                rule,
                share,
                cfg.max_invalid_share,
                blocking=True,
                passed=share <= cfg.max_invalid_share,
                detail=f"{share:.1%} of rows: {words}{where}, {worst:,} of {cur.rows:,}",
                limit=f"max {cfg.max_invalid_share:.1%}",
            )
        )
    share = cur.duplicates / cur.rows
    checks.append(
        _check(
            "duplicates",
            share,
            cfg.max_duplicate_share,
            blocking=True,
            passed=share <= cfg.max_duplicate_share,
            detail=f"{share:.1%} of rows are exact duplicates of another trip "
            f"({cur.duplicates:,} of {cur.rows:,})",
            limit=f"max {cfg.max_duplicate_share:.1%}",
        )
    )
    return checks


def null_check(ref: MonthProfile, cur: MonthProfile, cfg: DataChecksParams) -> dict[str, Any]:
    rises = {c: cur.nulls[c] / cur.rows - ref.nulls[c] / ref.rows for c in cur.nulls}
    column = max(sorted(rises), key=lambda c: rises[c])
    rise = rises[column]
    return _check(
        "nulls",
        rise,
        cfg.max_null_share_increase,
        blocking=True,
        passed=rise <= cfg.max_null_share_increase,
        detail=f"{column} is {cur.nulls[column] / cur.rows:.1%} null ({ref.month}: "
        f"{ref.nulls[column] / ref.rows:.1%}), the largest rise of any column",
        limit=f"max +{cfg.max_null_share_increase:.0%}",
    )


def completeness_checks(ref: MonthProfile, cur: MonthProfile, cfg: DataChecksParams) -> list[dict[str, Any]]:
    days = cur.trips_by_day
    floor = cfg.min_day_trip_share * days.sum() / len(days)
    covered = int((days > max(floor, 0)).sum())
    share = covered / len(days)
    empty = [str(i + 1) for i in np.flatnonzero(days <= max(floor, 0))]
    missing = f"; days without trips: {_span(empty)}" if empty else ""
    per_day = (days.sum() / len(days)) / (ref.trips_by_day.sum() / len(ref.trips_by_day))
    out = [
        _check(
            "days_covered",
            share,
            cfg.min_days_covered,
            blocking=True,
            passed=share >= cfg.min_days_covered,
            detail=f"{share:.0%} of the month's days have trips ({covered} of {len(days)}){missing}",
            limit=f"min {cfg.min_days_covered:.0%}",
        ),
        _check(
            "trips_per_day",
            per_day,
            cfg.min_trips_per_day_ratio,
            blocking=False,
            passed=cfg.min_trips_per_day_ratio <= per_day <= cfg.max_trips_per_day_ratio,
            detail=f"{per_day:.2f}x the trips per day of {ref.month} "
            f"({days.sum() / len(days):,.0f} vs {ref.trips_by_day.sum() / len(ref.trips_by_day):,.0f})",
            limit=f"{cfg.min_trips_per_day_ratio:g}x-{cfg.max_trips_per_day_ratio:g}x",
        ),
    ]
    # A vendor's feed that stops (or shrinks) while the others carry on.
    ratios = {}
    for vendor, rows in ref.rows_by_vendor.items():
        if vendor != UNKNOWN_VENDOR and rows / ref.rows >= cfg.min_vendor_share:
            ratios[vendor] = (cur.rows_by_vendor.get(vendor, 0) / cur.rows) / (rows / ref.rows)
    if ratios:
        vendor = min(sorted(ratios), key=lambda v: ratios[v])
        before = ref.rows_by_vendor[vendor] / ref.rows
        now = cur.rows_by_vendor.get(vendor, 0) / cur.rows
        out.append(
            _check(
                "vendor_rows",
                ratios[vendor],
                cfg.min_vendor_rows_ratio,
                blocking=True,
                passed=ratios[vendor] >= cfg.min_vendor_rows_ratio,
                detail=f"vendor {vendor} has {now:.1%} of the month's trips ({ref.month}: {before:.1%}), "
                f"{ratios[vendor]:.2f}x its share",
                limit=f"min {cfg.min_vendor_rows_ratio:g}x",
            )
        )
    return out


def _span(days: list[str]) -> str:
    return ", ".join(days) if len(days) <= 4 else f"{days[0]}-{days[-1]} ({len(days)} days)"


def kept_check(cur: MonthProfile, cfg: DataChecksParams) -> dict[str, Any]:
    """What the modelling filters keep, for the month and for each vendor big enough to judge."""
    shares = {"the month": (cur.kept, cur.rows)}
    for vendor, rows in cur.rows_by_vendor.items():
        if vendor != UNKNOWN_VENDOR and rows / cur.rows >= cfg.min_vendor_share:
            shares[f"vendor {vendor}"] = (cur.kept_by_vendor.get(vendor, 0), rows)
    who = min(sorted(shares), key=lambda k: shares[k][0] / shares[k][1])
    kept, rows = shares[who]
    vendors = [int(who.split()[1])] if who.startswith("vendor") else list(cur.rows_by_vendor)
    drops = {name: sum(by.get(v, 0) for v in vendors) for name, by in cur.dropped.items()}
    worst = max(sorted(drops), key=lambda n: drops[n])
    share = kept / rows
    return _check(
        "kept_share",
        share,
        cfg.min_kept_share,
        blocking=True,
        passed=share >= cfg.min_kept_share,
        detail=f"{share:.1%} of {who}'s trips pass the filters ({kept:,} of {rows:,}); "
        f"{worst} drops {drops[worst] / rows:.1%}",
        limit=f"min {cfg.min_kept_share:.0%}",
    )


def _pooled(profile: MonthProfile, vendors: list[int], band: int) -> np.ndarray:
    return sum(
        (profile.durations.get((v, band), np.zeros(N_BINS, np.int64)) for v in vendors), np.zeros(N_BINS)
    )


def vendor_check(ref: MonthProfile, cur: MonthProfile, cfg: DataChecksParams) -> dict[str, Any]:
    """Did one vendor's durations move for the same distance while the other vendors' stayed put?"""
    vendors = sorted({v for v, _ in ref.durations} & {v for v, _ in cur.durations} - {UNKNOWN_VENDOR})
    judged = []
    for vendor in vendors:
        others = [v for v in vendors if v != vendor]
        mine_bands, their_bands = [], []
        for band in range(len(BANDS)):
            sides = [
                (ref.durations.get((vendor, band)), cur.durations.get((vendor, band))),
                (_pooled(ref, others, band), _pooled(cur, others, band)),
            ]
            if any(h is None or h.sum() < cfg.min_band_trips for pair in sides for h in pair):
                continue
            (r_mine, c_mine), (r_them, c_them) = sides
            mine_bands.append(math.log(median_minutes(c_mine) / median_minutes(r_mine)))
            their_bands.append(math.log(median_minutes(c_them) / median_minutes(r_them)))
        if len(mine_bands) >= cfg.min_bands:
            mine, theirs = float(np.median(mine_bands)), float(np.median(their_bands))
            judged.append((abs(mine - theirs), abs(mine), vendor, mine, theirs, len(mine_bands)))
    if not judged:
        return _check(
            "vendor_consistency",
            0.0,
            cfg.max_vendor_divergence,
            blocking=True,
            passed=True,
            detail=f"not judged: no vendor has {cfg.min_band_trips} trips in {cfg.min_bands} distance bands "
            f"in both {ref.month} and {cur.month}, beside other vendors that do",
            limit=f"max {cfg.max_vendor_divergence:.0%}",
        )
    gap, _, vendor, mine, theirs, bands = max(judged)
    divergence = math.exp(gap) - 1.0
    return _check(
        "vendor_consistency",
        divergence,
        cfg.max_vendor_divergence,
        blocking=True,
        passed=divergence <= cfg.max_vendor_divergence,
        detail=f"vendor {vendor}'s trip durations for the same distance moved {math.exp(mine) - 1:+.0%} "
        f"against {ref.month}, the other vendors' {math.exp(theirs) - 1:+.0%} "
        f"(median over {bands} distance bands): {divergence:.0%} apart",
        limit=f"max {cfg.max_vendor_divergence:.0%} apart",
    )


def target_table(ref: MonthProfile, cur: MonthProfile) -> list[dict[str, Any]]:
    """Median duration per vendor (and all vendors) and distance band, reference vs current."""
    vendors = sorted({v for v, _ in ref.durations} | {v for v, _ in cur.durations})
    rows = []
    for label, members in [*((f"vendor {v}", [v]) for v in vendors if v != UNKNOWN_VENDOR), ("all", vendors)]:
        for band, name in enumerate(BANDS):
            r, c = _pooled(ref, members, band), _pooled(cur, members, band)
            row: dict[str, Any] = {
                "vendor": label,
                "band": name,
                "reference_trips": int(r.sum()),
                "current_trips": int(c.sum()),
                "reference_median_min": round(median_minutes(r), 2) if r.sum() else None,
                "current_median_min": round(median_minutes(c), 2) if c.sum() else None,
            }
            both = row["reference_median_min"] and row["current_median_min"]
            row["change"] = (
                round(row["current_median_min"] / row["reference_median_min"] - 1, 4) if both else None
            )
            rows.append(row)
    return rows


def filter_table(cur: MonthProfile) -> dict[str, dict[str, int]]:
    """Rows each filter drops, per vendor (``all`` = the month), and what is kept."""
    label = {v: ("unknown" if v == UNKNOWN_VENDOR else str(v)) for v in cur.rows_by_vendor}
    table = {
        name: {"all": sum(by.values()), **{label[v]: n for v, n in sorted(by.items())}}
        for name, by in cur.dropped.items()
    }
    table["rows"] = {"all": cur.rows, **{label[v]: n for v, n in sorted(cur.rows_by_vendor.items())}}
    table["kept"] = {"all": cur.kept, **{label[v]: cur.kept_by_vendor.get(v, 0) for v in sorted(label)}}
    return table


def evaluate(ref: MonthProfile, cur: MonthProfile, cfg: DataChecksParams) -> dict[str, Any]:
    """Every check of ``cur`` against ``ref``, and the month's verdict.

    The order is the order of evidence: the first failing blocking check is the one the one-line
    reason names (a month whose pickups are all in another year also covers no days and keeps no
    trips, but the pickups are the cause).
    """
    checks = [
        *rule_checks(cur, cfg),
        null_check(ref, cur, cfg),
        *completeness_checks(ref, cur, cfg),
        vendor_check(ref, cur, cfg),
        kept_check(cur, cfg),
    ]
    blocking = [c["name"] for c in checks if c["blocking"] and not c["passed"]]
    accepted = cur.month in cfg.accepted_months
    first = next((c for c in checks if c["blocking"] and not c["passed"]), None)
    return {
        "month": cur.month,
        "reference_month": ref.month,
        "rows": cur.rows,
        "reference_rows": ref.rows,
        "passed": not blocking,
        "accepted": accepted,
        "blocking": blocking,
        "warnings": [c["name"] for c in checks if not c["blocking"] and not c["passed"]],
        "problem": problem_sentence(cur.month, first) if first else None,
        "checks": checks,
        "filters": filter_table(cur),
        "target_by_vendor": target_table(ref, cur),
    }


def problem_sentence(month: str, check: dict[str, Any]) -> str:
    """The one line a person reads: the check, its figure and its threshold."""
    return (
        f"data problem in {month}: {check['name']}: {check['detail']} (threshold {check['threshold_text']})"
    )


def run_checks(params: Params, raw_dir: Path = RAW_DIR) -> DataChecks:
    """The current month against the reference month, from the ingested files (data_checks.json)."""
    months = params.months
    current = profile_month(months.current, params.filters, raw_dir)
    reference = (
        current
        if months.reference == months.current
        else profile_month(months.reference, params.filters, raw_dir)
    )
    return DataChecks.model_validate(evaluate(reference, current, params.data_checks))
